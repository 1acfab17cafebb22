"""Would the CRD's map gain from the reconstruction error beside it? Validation only.

The CRD (stage 3) learns its pseudo-anomalies; the reconstruction error of D_N (the
+RcAE +DPN detector) needs no training on defects and, on MTD, found cracks better (crack
I-AUROC 71 vs 61 in docs/results/mtd-detector.md). This study scores a finished run's
validation set (held-out normals, then one pseudo-anomalous copy of each: the set
`validation.json` is computed on) with both raw maps and with their weighted sum

    fused = (1 - w) * crd / s_crd + w * recon / s_recon

where s is a scale of each map on the clean held-out normals (`median_score`: the median of
their image scores; `p99_pixel`: the 99th percentile of their raw pixels), so neither map
dominates by its units. Metrics under the run's own smoothing and image score.

  python experiments/score_fusion.py runs/<run>/<category> [--weights 0.25 0.5 0.75]

Writes <run>/score_fusion.json and score_fusion.md (atomically). Never reads the test set:
a weight is worth a test reading only if validation prefers it over both maps alone.
"""
import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rcae_jax import config as config_lib  # pylint: disable=wrong-import-position
from rcae_jax import evaluators, files, inference, metrics  # pylint: disable=wrong-import-position
from rcae_jax.evaluators import validation  # pylint: disable=wrong-import-position

SCALES = ('median_score', 'p99_pixel')
SHOWN = ('image_auroc', 'pixel_auroc', 'aupro')


def scale(config, raw_normals, how):
  """The scale of one raw map (N, H, W) on clean normal images."""
  if how == 'median_score':
    return float(np.median(inference.rescore(config, raw_normals)['score']))
  if how == 'p99_pixel':
    return float(np.percentile(raw_normals, 99))
  raise ValueError(f'scale {how!r} is not one of {SCALES}')


def fuse(raw_a, raw_b, scale_a, scale_b, w):
  """(1 - w) a / scale_a + w b / scale_b: w = 0 is map a alone (up to its scale)."""
  return (1.0 - w) * np.asarray(raw_a) / scale_a + w * np.asarray(raw_b) / scale_b


def study(workdir, weights=(0.25, 0.5, 0.75)):
  ctx = evaluators.Context.of_run(workdir, need_test=False)
  config = ctx.config
  src = validation.recon_source(config)
  if config_lib.score_source(config) == src:
    raise SystemExit(f'{workdir}: the run scores by reconstruction already; nothing to fuse')
  images, masks = validation.validation_set(config, ctx.dataset.val, config.data.seed)
  n = len(ctx.dataset.val)  # the first n are the clean held-out normals
  rec_cfg = config_lib.apply_overrides(config, [f'score.source={src}'])
  raw = {'crd': inference.run(config, ctx.params, images, with_sequences='raw')['raw'],
         src: inference.run(rec_cfg, ctx.params, images, with_sequences='raw')['raw']}
  labels = masks.reshape(len(masks), -1).any(axis=1)

  def measured(raw_map):
    out = inference.rescore(config, raw_map)
    m = metrics.compute_metrics(out['score'], labels, out['map'], masks)
    row = {k: float(m[k]) for k in SHOWN}
    row['val_choice'] = (row['image_auroc'] + row['aupro']) / 2  # the project's choice rule
    return row

  rows = {'CRD alone (the run)': measured(raw['crd']), f'{src} error alone': measured(raw[src])}
  for how in SCALES:
    s_crd, s_rec = scale(config, raw['crd'][:n], how), scale(config, raw[src][:n], how)
    for w in weights:
      rows[f'fused, {how}, w = {w}'] = measured(fuse(raw['crd'], raw[src], s_crd, s_rec, w))
  out = {'workdir': str(workdir), 'recon_source': src, 'n_heldout': n, 'rows': rows}
  files.write_json(pathlib.Path(workdir) / 'score_fusion.json', out)
  lines = ['| scoring | val I-AUROC | val P-AUROC | val AUPRO | (I + AUPRO) / 2 |',
           '|---|---|---|---|---|']
  lines += [f'| {name} | {r["image_auroc"]:.1f} | {r["pixel_auroc"]:.1f} | {r["aupro"]:.1f} | '
            f'{r["val_choice"]:.1f} |' for name, r in rows.items()]
  files.atomic_write(pathlib.Path(workdir) / 'score_fusion.md', '\n'.join(lines) + '\n')
  print('\n'.join(lines))
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('workdir', type=pathlib.Path, help='a finished run (its model/ folder)')
  ap.add_argument('--weights', type=float, nargs='+', default=[0.25, 0.5, 0.75])
  a = ap.parse_args(argv)
  study(a.workdir, tuple(a.weights))


if __name__ == '__main__':
  main()
