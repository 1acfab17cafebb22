"""The field's metrics on the test set (I-AUROC, P-AUROC, AUPRO, F1-max, pixel AP), for the
category and per defect type: eval/metrics.json and eval/metrics.md."""
import pathlib

import numpy as np

from rcae_jax import files, metrics, runinfo, sizes, tables
from rcae_jax.evaluators import threshold as threshold_lib


def per_defect(scores, maps, labels, masks, defects, valid=None):
  """Normal test images + one defect type at a time (MTD's blowhole, crack, ...)."""
  kinds = sorted({d for d, l in zip(defects, labels) if l})
  if len(kinds) < 2:
    return {}
  defects = np.array(defects)
  out = {}
  for kind in kinds:
    sel = (labels == 0) | (defects == kind)
    out[kind] = metrics.compute_metrics(scores[sel], labels[sel], maps[sel], masks[sel],
                                        None if valid is None else valid[sel])
  return out


def _group(label, defect):
  return defect if label else 'good'


def empty_masks(labels, has_pixel, defects, size):
  """Defective test images whose mask has no pixel left at the evaluated size (h, w) (a
  crack 1-2 px wide at full size can vanish at 64²): they count for the image metrics only."""
  empty = (labels == 1) & ~has_pixel
  kinds = sorted({d for d, l in zip(defects, labels) if l})
  defects = np.array(defects)
  return {'n': int(empty.sum()), 'size': [int(s) for s in size],
          'per_defect': {k: int((empty & (defects == k)).sum()) for k in kinds}}


def streamed(ctx, bits):
  """(category metrics, per-defect metrics, whether each mask has a pixel) from one pass over
  the test set: a PixelCurves per group (normal images, each defect type), added up per
  evaluation."""
  ds = ctx.dataset
  labels, groups = ds.test_labels, np.array([_group(l, d) for l, d in zip(ds.test_labels,
                                                                           ds.test_defects)])
  curves = {g: metrics.PixelCurves(bits) for g in sorted(set(groups))}
  scores, has_pixel = np.empty(len(ds.test)), np.empty(len(ds.test), bool)
  for idx, out in ctx.stream(ds.test, valid=ds.test_valid):
    scores[idx] = out['score']
    masks = np.asarray(ds.test_masks[idx])
    valid = None if ds.test_valid is None else ds.test_valid[idx]
    has_pixel[idx] = masks.any(axis=(1, 2))
    for g in set(groups[idx]):
      sel = groups[idx] == g
      curves[g].add(out['map'][sel], masks[sel], None if valid is None else valid[sel])
  ctx.memoise_scores('test', scores)
  cat = metrics.streamed_metrics(scores, labels, sum(curves.values(), metrics.PixelCurves(bits)))
  kinds = sorted(g for g in curves if g != 'good')
  defects = {}
  if len(kinds) >= 2:
    for kind in kinds:
      sel = (labels == 0) | (groups == kind)
      both = curves[kind] + curves['good'] if 'good' in curves else curves[kind]
      defects[kind] = metrics.streamed_metrics(scores[sel], labels[sel], both)
  return cat, defects, has_pixel


def exact(ctx):
  """(category metrics, per-defect metrics, whether each mask has a pixel) from every pixel
  score held in memory."""
  ds = ctx.dataset
  maps = np.empty(ds.test_masks.shape, np.float32)
  scores = np.empty(len(ds.test))
  for idx, out in ctx.stream(ds.test, valid=ds.test_valid):
    scores[idx], maps[idx] = out['score'], out['map']
  ctx.memoise_scores('test', scores)
  masks = np.asarray(ds.test_masks)
  valid = None if ds.test_valid is None else np.asarray(ds.test_valid)
  return (metrics.compute_metrics(scores, ds.test_labels, maps, masks, valid),
          per_defect(scores, maps, ds.test_labels, masks, ds.test_defects, valid),
          masks.any(axis=(1, 2)))


def test_normal_gap(test_scores, test_labels, normal_gap):
  """How the normal *test* images score against validation's `normal_gap` sets (the training
  normals and the held-out ones, both from the training folder): medians and 99th
  percentiles and their ratios. Held-out normals that score like the training normals while
  test normals score far higher say the test folder's normals differ from the training
  folder's, which no held-out split can see (validation then over-trusts the test). A
  report, never used to choose anything. None without normal test images or a gap."""
  good = np.asarray(test_scores)[np.asarray(test_labels) == 0]
  if not len(good) or not normal_gap:
    return None
  stats = {'n': int(len(good)), 'score_median': float(np.median(good)),
           'score_p99': float(np.percentile(good, 99))}
  ratio = lambda ref: {k: stats[k] / ref[k] if ref[k] else float('inf')
                       for k in ('score_median', 'score_p99')}
  return {'test_normals': stats, 'ratio_to_train': ratio(normal_gap['train']),
          'ratio_to_heldout': ratio(normal_gap['heldout'])}


def run(ctx):
  """-> {'per_category', 'mean', 'per_defect', 'n_test', 'n_anomalous', 'empty_masks'
  [, 'validation', 'test_normal_gap']}."""
  ds = ctx.dataset
  bits = ctx.config.get('eval_pixel_bits', 0)
  cat_metrics, defects, has_pixel = streamed(ctx, bits) if bits else exact(ctx)
  empty = empty_masks(ds.test_labels, has_pixel, ds.test_defects, ds.test_masks.shape[1:3])
  env = pathlib.Path(ctx.workdir) / 'env.json'
  trained_env = files.read_json(env) if env.exists() else None
  result = {'per_category': {ds.category: cat_metrics}, 'mean': cat_metrics,
            'per_defect': {ds.category: defects},
            'n_test': int(len(ds.test)), 'n_anomalous': int(ds.test_labels.sum()),
            'empty_masks': empty, 'code': code_of(trained_env)}
  if ctx.results.get('validation'):
    result['validation'] = ctx.results['validation']['metrics']
    shift = test_normal_gap(ctx.scores('test', ds.test, ds.test_valid), ds.test_labels,
                            ctx.results['validation'].get('normal_gap'))
    if shift:
      result['test_normal_gap'] = shift
  if ctx.is_main:
    eval_dir = ctx.eval_dir
    files.write_json(eval_dir / 'metrics.json', result)
    table = tables.metrics_table(result['per_category'], metrics.METRICS)
    if defects:
      table += ('\n\nPer defect type (normal test images + that type):\n\n'
                + tables.metrics_table(defects, metrics.METRICS, first='defect'))
    if empty['n']:
      kinds = ', '.join(f'{n} {k}' for k, n in empty['per_defect'].items() if n)
      table += (f"\n\n{empty['n']} of {result['n_anomalous']} defective test images ({kinds}) "
                f"have no mask pixel left at {sizes.label(empty['size'])}: they count for the "
                'image metrics, not the pixel metrics.')
    if result.get('test_normal_gap'):
      r, held = result['test_normal_gap']['ratio_to_train'], ctx.results['validation'][
          'normal_gap']['ratio']
      table += (f"\n\nNormal test images against the training normals: median score "
                f"{r['score_median']:.2f}×, 99th percentile {r['score_p99']:.2f}× (held-out "
                f"normals: {held['score_median']:.2f}× and {held['score_p99']:.2f}×). A test "
                'ratio far above the held-out one means the test folder\'s normals differ from '
                'the training folder\'s: validation, which sees held-out normals from the '
                'training folder only, then over-trusts the test.')
    code = result['code']
    table += (f"\n\nTrained by {runinfo.describe(code['trained'])} on "
              f"{runinfo.describe_machine(trained_env)}; evaluated by "
              f"{runinfo.describe(code['evaluated'])} on "
              f"{runinfo.describe_machine(runinfo.machine())}.")
    files.atomic_write(eval_dir / 'metrics.md', table + '\n')
    write_scores(eval_dir / 'scores.csv', ctx, ctx.scores('test', ds.test, ds.test_valid))
  return result


def write_scores(path, ctx, scores):
  """eval/scores.csv: every test image's score, label, defect type and the decision at the
  run's threshold (calibrated on held-out normals): what `predict` and `Detector.predict`
  give for the same file."""
  ds = ctx.dataset
  threshold = threshold_lib.load(ctx.workdir).get('threshold') if ctx.write else None
  rows = [{'image': name, 'label': int(label), 'defect': defect, 'score': f'{score:.9g}',
           'decision': '' if threshold is None else
                       'anomalous' if score > threshold else 'normal'}
          for name, label, defect, score in zip(ds.test_names, ds.test_labels, ds.test_defects,
                                                scores)]
  files.write_csv(path, ['image', 'label', 'defect', 'score', 'decision'], rows)


def code_of(trained_env):
  """{'trained': the code that trained the run (its env.json's content, or None), 'evaluated':
  this code}."""
  return {'trained': (trained_env or {}).get('code'), 'evaluated': runinfo.code_version()}
