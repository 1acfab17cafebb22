"""Test pictures: the most and least anomalous images of each label with their maps, one
typical image per defect type (the median score of its type: neither the best nor the worst
case), and the recursion strips (x | R_1 .. R_N | D_1 .. D_N) of the first four."""
import pathlib

import numpy as np

from rcae_jax import figures


def run(ctx, n=None):
  ds = ctx.dataset
  n = n or ctx.options.get('n_pictures', 8)
  scores, labels = ctx.scores('test', ds.test), ds.test_labels
  order = np.argsort(scores)
  bad = [i for i in order[::-1] if labels[i]][: n // 2]
  missed = [i for i in order if labels[i]][: max(1, n // 4)]
  good = [i for i in order[::-1] if not labels[i]][: max(1, n // 4)]
  pick = list(dict.fromkeys(bad + missed + good))
  names = ['/'.join(pathlib.Path(ds.test_names[i]).parts[-3:]) for i in pick]
  if not ctx.is_main:
    return None
  eval_dir = ctx.eval_dir
  seq = ctx.infer('test/pictures', ds.test[pick], with_sequences=True)
  maps = seq['map']  # only the pictured images' maps are kept: one colour scale for them
  paths = [figures.heatmaps(eval_dir / 'heatmaps.png', ds.test[pick], ds.test_masks[pick],
                            maps, scores[pick], names, vmax=float(np.quantile(maps, 0.999)),
                            labels=labels[pick])]
  kinds = sorted({d for d, l in zip(ds.test_defects, labels) if l})
  if len(kinds) > 1:
    typical = []
    for kind in kinds:
      idx = np.array([i for i in order if labels[i] and ds.test_defects[i] == kind])
      typical.append(int(idx[len(idx) // 2]))
    typical.append(int(np.array([i for i in order if not labels[i]])[-1]))  # worst normal
    maps_t = ctx.infer('test/typical', ds.test[typical])['map']
    titles = [f'{k} (median of its type)' for k in kinds] + ['normal, highest score']
    paths.append(figures.heatmaps(eval_dir / 'heatmaps_by_defect.png', ds.test[typical],
                                  ds.test_masks[typical], maps_t, scores[typical], titles,
                                  vmax=float(np.quantile(maps_t, 0.999)),
                                  labels=labels[typical]))
  for j, i in enumerate(pick[:4] if 'recon' in seq else []):  # a method may have none
    paths.append(figures.sequence_strip(
        eval_dir / f'sequence_{j}.png', ds.test[i], seq['recon'][:, j],
        seq['enhanced'][:, j] if 'enhanced' in seq else None, names[j]))
  return {'files': [str(p) for p in paths]}
