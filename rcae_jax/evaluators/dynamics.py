"""Recursion dynamics: how R_n and D_n evolve over n inside and outside the defects.

The paper's claim is that normal regions settle after a few steps while anomalous regions
keep changing. We measure, per step n, the mean reconstruction error |R_n - x| and the mean
change |R_{n+1} - R_n| over defect pixels and over normal pixels (of all test images), and
their ratio anomalous / normal: a ratio above 1 that stays above 1 supports the claim.
"""
import numpy as np

from rcae_jax import config as config_lib
from rcae_jax import figures, files
from rcae_jax.evaluators import validation


def _region_means(per_pixel, masks, valid=None):
  """per_pixel (S, B, H, W) -> (anomalous mean, normal mean) per step (normal: not in the
  masks, and `valid`, not kept-aspect padding)."""
  normal = ~masks if valid is None else ~masks & valid
  anom = np.array([p[masks].mean() if masks.any() else np.nan for p in per_pixel])
  norm = np.array([p[normal].mean() for p in per_pixel])
  return anom, norm


def curves(seq, images, masks, valid=None):
  """seq (N, B, H, W, C) float, images (B, H, W, C) float, masks (B, H, W) bool, valid
  (B, H, W) bool or None -> dict."""
  err = np.abs(seq - images[None]).mean(-1)
  change = np.abs(np.diff(seq, axis=0)).mean(-1)
  e_a, e_n = _region_means(err, masks, valid)
  c_a, c_n = _region_means(change, masks, valid)
  with np.errstate(divide='ignore', invalid='ignore'):  # a fully settled step: ratio inf
    return {'error_anomalous': e_a, 'error_normal': e_n, 'error_ratio': e_a / e_n,
            'change_anomalous': c_a, 'change_normal': c_n, 'change_ratio': c_a / c_n}


def run(ctx):
  """Curves over the test images (up to options['max_images']) and the validation
  suppression per step -> dynamics/dynamics.json and figures."""
  config, ds, workdir = ctx.config, ctx.dataset, ctx.workdir
  max_images = ctx.options.get('max_images', 64)
  bad = np.nonzero(ds.test_labels == 1)[0]
  good = np.nonzero(ds.test_labels == 0)[0]
  pick = np.concatenate([bad[: max_images - max_images // 4], good[: max_images // 4]])
  images = ds.test[pick]
  masks = ds.test_masks[pick]
  valid = None if ds.test_valid is None else ds.test_valid[pick]
  out = ctx.infer('test/dynamics', images, with_sequences=True, valid=valid)
  x = images.astype(np.float32) / 255.0
  depth = out['recon'].shape[0]  # N for RcAE, 1 for FAE's one restoration
  result = {'method': config_lib.method(config), 'recursion': config.model.recursion,
            'depth': depth,
            'n_images': int(len(pick)), 'n_anomalous': int((ds.test_labels[pick] == 1).sum()),
            'steps': list(range(1, depth + 1)), 'R': curves(out['recon'], x, masks, valid)}
  if 'enhanced' in out:
    result['D'] = curves(out['enhanced'], x, masks, valid)
  out_dir = workdir / 'dynamics'
  val = ctx.results.get('validation') or validation.run(ctx)
  supp = val and val.get('suppression')
  if supp:  # planted defects on held-out normals, where the clean truth is known
    result['suppression'] = supp
  if not ctx.is_main:
    return result
  for log in sorted(workdir.glob('stage*/metrics.jsonl')):  # runs older than the curves too
    figures.training_curves(log.parent / 'curves.png', files.read_jsonl(log), log.parent.name)
  if supp:
    steps = result['steps']
    names = [k for k in ('R', 'D') if f'residual_{k}' in supp]
    figures.curves(out_dir / 'suppression.png', steps,
                   {**{f'residual {k}_n (share of the defect left)': supp[f'residual_{k}']
                       for k in names},
                    **{f'normal error {k}_n': supp[f'normal_error_{k}'] for k in names}},
                   'recursion step n', 'fraction',
                   'planted defects on held-out normals: suppression per step')
    print(f"residual of planted defects per step, R_n: "
          f"{np.round(supp['residual_R'], 3).tolist()}; normal error R_n: "
          f"{np.round(supp['normal_error_R'], 4).tolist()}")
  files.write_json(out_dir / 'dynamics.json', result)
  steps = result['steps']
  for name in [k for k in ('R', 'D') if k in result]:
    c = result[name]
    figures.curves(out_dir / f'error_{name}.png', steps,
                   {'defect pixels': c['error_anomalous'], 'normal pixels': c['error_normal']},
                   'recursion step n', f'mean |{name}_n - x|', f'{name}: error over steps')
    if len(steps) > 1:
      figures.curves(out_dir / f'change_{name}.png', steps[1:],
                     {'defect pixels': c['change_anomalous'], 'normal pixels': c['change_normal']},
                     'recursion step n+1', f'mean |{name}_(n+1) - {name}_n|',
                     f'{name}: change per step (ratio defect/normal '
                     f'{np.nanmean(c["change_ratio"]):.2f})')
  for j in range(min(3, int((ds.test_labels[pick] == 1).sum()))):
    figures.sequence_strip(out_dir / f'strip_{j}.png', images[j], out['recon'][:, j],
                           out['enhanced'][:, j] if 'enhanced' in out else None,
                           'defective test image')
  r = result['R']
  print(f"R_n error ratio defect/normal per step: {np.round(r['error_ratio'], 2).tolist()}")
  if len(steps) > 1:
    print(f"R_n change ratio defect/normal per step: {np.round(r['change_ratio'], 2).tolist()}")
  print(f'wrote {out_dir}/dynamics.json and figures')
  return result
