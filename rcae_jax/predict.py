"""Anomaly maps and decisions for new images, with the threshold calibrated at training time.

Inputs are image files and folders (searched recursively). Each output mirrors its input's
path as given (`predict ... data/good data/scratch` writes `maps/data/good/000.png.png` and
`maps/data/scratch/000.png.png`; `a.jpg` and `a.png` write `a.jpg.png` and `a.png.png`), so
no two inputs can share an output. Files that are not images, or cannot be decoded, are
listed with the reason in `skipped.csv` and on the screen. Each map is written at its input
image's size: the anomaly map in 'jet' over the image, and a colour scale on the right whose
top is the decision threshold (red: at or above it; blue: no anomaly); `scores.csv` holds
the image score, the threshold and the decision.
"""
import pathlib

from rcae_jax import api, figures, files
from rcae_jax.data import common


def output_name(path):
  """maps/<this>: the input's path as given, made relative ('..' -> '__'), plus '.png'."""
  p = pathlib.PurePath(path)
  parts = ['__' if part == '..' else part for part in p.parts
           if part not in (p.anchor, '.', '')]
  return pathlib.PurePath(*parts).as_posix() + '.png'


def expand(inputs):
  """-> (image paths, [(path, reason)] skipped): folders searched recursively, image files
  by extension; every non-image file found in a folder is skipped by name."""
  paths, skipped, seen = [], [], set()
  for item in inputs:
    p = pathlib.Path(item)
    if p.is_dir():
      found = sorted(f for f in p.rglob('*') if f.is_file())
      images = [f for f in found if f.suffix in common.IMAGE_EXTS]
      skipped += [(str(f), f'not an image file (extension {f.suffix or "none"!r})')
                  for f in found if f.suffix not in common.IMAGE_EXTS]
      if not images:
        raise common.DataError(f'{p}: folder holds no images ({", ".join(common.IMAGE_EXTS)})')
    elif p.is_file():
      images = [p]
    else:
      raise common.DataError(f'{p}: no such file or folder')
    for f in images:
      if f.resolve() not in seen:
        seen.add(f.resolve())
        paths.append(str(f))
  return paths, skipped


def _map_png(original, amap, vmax, threshold):
  """The map (at the original image's size), over the image, with the colour scale."""
  return figures.overlay_png(original, amap, vmax, scale=(vmax, threshold))


def predict(workdir, inputs, out=None):
  """Writes <out>/maps/<input path>.png, <out>/scores.csv and <out>/skipped.csv, from
  `api.Detector.predict` (the maps and scores a notebook gets)."""
  detector = api.load(workdir)
  out = pathlib.Path(out or pathlib.Path(workdir) / 'predict')
  paths, skipped = expand(inputs)
  ch = detector.config.data.channels
  threshold = detector.threshold
  rows, batch = [], max(1, detector.config.eval_batch_size)
  for start in range(0, len(paths), batch):
    chunk, originals = [], []
    for path in paths[start:start + batch]:
      try:
        originals.append(common.read_image(path, None, ch))
        chunk.append(path)
      except common.DataError as e:
        skipped.append((path, str(e).removeprefix(f'{path}: ')))
    if not chunk:
      continue
    result = detector.predict(originals)
    vmax = threshold if threshold else float(max(m.max() for m in result.maps)) or 1.0
    for path, orig, amap, score in zip(chunk, originals, result.maps, result.scores):
      files.atomic_write(out / 'maps' / output_name(path), _map_png(orig, amap, vmax, threshold))
      decision = ('unknown' if threshold is None else
                  'anomalous' if score > threshold else 'normal')
      rows.append({'image': path, 'map': f'maps/{output_name(path)}', 'score': f'{score:.6g}',
                   'threshold': '' if threshold is None else f'{threshold:.6g}',
                   'decision': decision})
  files.write_csv(out / 'skipped.csv', ['file', 'reason'], [dict(file=f, reason=r) for f, r in skipped])
  if not rows:
    raise common.DataError(f'no image could be read from {", ".join(map(str, inputs))} '
                           f'({len(skipped)} skipped; reasons in {out}/skipped.csv)')
  files.write_csv(out / 'scores.csv', list(rows[0]), rows)
  for f, reason in skipped:
    print(f'skipped {f}: {reason}')
  if threshold is None:
    print(f'{len(rows)} images scored, no decisions: the run has no threshold '
          f'({detector.calibration.get("why", "no calibration.json")}); wrote '
          f'{out}/scores.csv and {out}/maps/')
  else:
    n_bad = sum(r['decision'] == 'anomalous' for r in rows)
    print(f'{len(rows)} images: {n_bad} anomalous (threshold {threshold:.6g}); wrote '
          f'{out}/scores.csv and {out}/maps/' + (f'; {len(skipped)} skipped' if skipped else ''))
  return rows
