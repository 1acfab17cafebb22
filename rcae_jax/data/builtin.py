"""The built-in dataset: real textures shipped inside scikit-image, no download.

Normal crops of brick / grass / gravel; test crops carry real foreign-texture inserts
(another of the textures, in an irregular blob) or drawn scratches, with exact masks.
Train crops come from the top 60 % of each source image and test crops from the bottom
40 %, so no test pixel was seen in training. Written to disk in MVTec AD layout.
"""
import pathlib

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from rcae_jax import files

TEXTURES = ('brick', 'grass', 'gravel')
VERSION = 1


def _source(name):
  from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  return np.asarray(getattr(skdata, name)(), np.uint8)


def _crop(rng, img, rows, size):
  y = rng.integers(rows[0], rows[1] - size + 1)
  x = rng.integers(0, img.shape[1] - size + 1)
  crop = img[y:y + size, x:x + size]
  return np.rot90(crop, rng.integers(4)) if rng.random() < 0.5 else crop


def _blob_mask(rng, size):
  noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 10)
  yy, xx = np.mgrid[:size, :size]
  cy, cx = rng.uniform(0.3, 0.7, 2) * size
  r = rng.uniform(0.1, 0.2) * size
  field = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) + noise / (4 * noise.std())
  return field > 0.5


def _scratch(rng, crop):
  size = crop.shape[0]
  im = Image.fromarray(crop)
  mask = Image.new('L', (size, size), 0)
  pts = [tuple(rng.uniform(0.15, 0.85, 2) * size)]
  for _ in range(rng.integers(2, 4)):
    step = rng.normal(size=2) * size * 0.2
    pts.append(tuple(np.clip(np.array(pts[-1]) + step, 2, size - 2)))
  width = int(rng.integers(2, 4))
  shade = int(rng.choice([rng.integers(0, 40), rng.integers(215, 256)]))
  ImageDraw.Draw(im).line(pts, fill=shade, width=width, joint='curve')
  ImageDraw.Draw(mask).line(pts, fill=255, width=width, joint='curve')
  return np.asarray(im), np.asarray(mask)


def build(root, n_train=80, n_test_good=20, n_test_bad=20, size=128, seed=0):
  """Writes <root>/<texture>/{train/good,test/{good,texture,scratch},ground_truth/...}."""
  root = pathlib.Path(root)
  with files.exclusive(root / '.building'):  # a second process waits, then finds it built
    return _build(root, n_train, n_test_good, n_test_bad, size, seed)


def _build(root, n_train, n_test_good, n_test_bad, size, seed):
  stamp = root / 'BUILT.json'
  spec = dict(version=VERSION, n_train=n_train, n_test_good=n_test_good,
              n_test_bad=n_test_bad, size=size, seed=seed)
  if stamp.exists() and stamp.read_text().strip() == files.json.dumps(spec, sort_keys=True):
    return root
  rng = np.random.default_rng(seed)
  sources = {t: _source(t) for t in TEXTURES}
  def save(arr, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
  for name, img in sources.items():
    split = int(img.shape[0] * 0.6)
    base = root / name
    for i in range(n_train):
      save(_crop(rng, img, (0, split), size), base / 'train' / 'good' / f'{i:03d}.png')
    for i in range(n_test_good):
      save(_crop(rng, img, (split, img.shape[0]), size), base / 'test' / 'good' / f'{i:03d}.png')
    others = [t for t in TEXTURES if t != name]
    for i in range(n_test_bad):
      crop = _crop(rng, img, (split, img.shape[0]), size).copy()
      other = sources[others[i % 2]]
      patch = _crop(rng, other, (0, other.shape[0]), size)
      mask = _blob_mask(rng, size)
      crop[mask] = patch[mask]
      save(crop, base / 'test' / 'texture' / f'{i:03d}.png')
      save((mask * 255).astype(np.uint8), base / 'ground_truth' / 'texture' / f'{i:03d}_mask.png')
    for i in range(n_test_bad):
      crop, mask = _scratch(rng, np.ascontiguousarray(_crop(rng, img, (split, img.shape[0]), size)))
      save(crop, base / 'test' / 'scratch' / f'{i:03d}.png')
      save(mask, base / 'ground_truth' / 'scratch' / f'{i:03d}_mask.png')
  files.atomic_write(stamp, files.json.dumps(spec, sort_keys=True))
  return root
