"""Test pictures: the most and least anomalous images of each label with their maps, one
typical image per defect type (the median score of its type: neither the best nor the worst
case), and the recursion strips (x | R_1 .. R_N | D_1 .. D_N) of the first four."""
import pathlib

import numpy as np

from rcae_jax import figures, sizes


def _unpadded(ds, pick, *arrays, axis=0):
  """Each array's pictured images without their kept-aspect padding (lists; unchanged when
  the images are stretched)."""
  if ds.test_valid is None:
    return arrays
  boxes = ds.test_valid.boxes[pick]
  return tuple([sizes.crop_box(a[j], b, axis) for j, b in enumerate(boxes)] for a in arrays)


def _vmax(maps):
  return float(np.quantile(np.concatenate([np.ravel(m) for m in maps]), 0.999))


def run(ctx, n=None):
  ds = ctx.dataset
  n = n or ctx.options.get('n_pictures', 8)
  scores, labels = ctx.scores('test', ds.test, ds.test_valid), ds.test_labels
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
  # only the pictured images' maps are kept: one colour scale for them
  images, masks, maps = _unpadded(ds, pick, ds.test[pick], ds.test_masks[pick], seq['map'])
  paths = [figures.heatmaps(eval_dir / 'heatmaps.png', images, masks, maps, scores[pick],
                            names, vmax=_vmax(maps), labels=labels[pick])]
  kinds = sorted({d for d, l in zip(ds.test_defects, labels) if l})
  if len(kinds) > 1:
    typical = []
    for kind in kinds:
      idx = np.array([i for i in order if labels[i] and ds.test_defects[i] == kind])
      typical.append(int(idx[len(idx) // 2]))
    typical.append(int(np.array([i for i in order if not labels[i]])[-1]))  # worst normal
    images_t, masks_t, maps_t = _unpadded(ds, typical, ds.test[typical],
                                          ds.test_masks[typical],
                                          ctx.infer('test/typical', ds.test[typical])['map'])
    titles = [f'{k} (median of its type)' for k in kinds] + ['normal, highest score']
    paths.append(figures.heatmaps(eval_dir / 'heatmaps_by_defect.png', images_t, masks_t,
                                  maps_t, scores[typical], titles, vmax=_vmax(maps_t),
                                  labels=labels[typical]))
  for j, i in enumerate(pick[:4] if 'recon' in seq else []):  # a method may have none
    (image,), = _unpadded(ds, [i], ds.test[[i]])
    seqs = [seq[k][:, j] for k in ('recon', 'enhanced') if k in seq]
    seqs = [_unpadded(ds, [i], s[None], axis=1)[0][0] for s in seqs]
    paths.append(figures.sequence_strip(eval_dir / f'sequence_{j}.png', image, seqs[0],
                                        seqs[1] if len(seqs) > 1 else None, names[j]))
  return {'files': [str(p) for p in paths]}
