"""Anomaly maps and decisions for new images, with the threshold calibrated at training time."""
import csv
import io
import pathlib

import numpy as np

from rcae_jax import checkpoints, figures, files, inference
from rcae_jax.evaluators import threshold as threshold_lib
from rcae_jax.data import common


def _expand(inputs):
  paths = []
  for item in inputs:
    p = pathlib.Path(item)
    if p.is_dir():
      found = common.list_images(p)
      if not found:
        raise common.DataError(f'{p}: folder holds no images ({", ".join(common.IMAGE_EXTS[:5])})')
      paths += found
    elif p.is_file():
      paths.append(str(p))
    else:
      raise common.DataError(f'{p}: no such file or folder')
  return paths


def predict(workdir, inputs, out=None):
  """Writes <out>/maps/<name>.png (heatmap over the image) and <out>/scores.csv."""
  config, params = checkpoints.load_bundle(workdir)
  out = pathlib.Path(out or pathlib.Path(workdir) / 'predict')
  paths = _expand(inputs)
  res, ch = config.data.resolution, config.data.channels
  images = np.stack([common.read_image(p, res, ch) for p in paths])
  result = inference.run(config, params, images)
  threshold = threshold_lib.load(workdir)['threshold']
  vmax = threshold if threshold else float(result['map'].max())
  rows = []
  for path, img, amap, score in zip(paths, images, result['map'], result['score']):
    name = pathlib.Path(path).stem
    files.atomic_write(out / 'maps' / f'{name}.png', figures.overlay_png(img, amap, vmax))
    decision = ('unknown' if threshold is None else
                'anomalous' if score > threshold else 'normal')
    rows.append({'image': path, 'score': f'{score:.6g}', 'threshold':
                 '' if threshold is None else f'{threshold:.6g}', 'decision': decision})
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  files.atomic_write(out / 'scores.csv', buf.getvalue())
  n_bad = sum(r['decision'] == 'anomalous' for r in rows)
  print(f'{len(rows)} images: {n_bad} anomalous (threshold {threshold}); wrote {out}/scores.csv '
        f'and {out}/maps/')
  return rows
