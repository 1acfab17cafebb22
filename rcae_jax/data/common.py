"""Reading images and masks with clear errors, and the in-memory `Dataset`."""
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib

import numpy as np
from PIL import Image

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.JPG', '.PNG')


class DataError(ValueError):
  """Bad input data; the message names the file or folder and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Sample:
  image: str
  mask: str | None = None   # None: all-normal pixels
  label: int = 0            # 0 normal, 1 anomalous
  defect: str = 'good'
  mask_min: int = 1         # mask pixel >= mask_min is a defect (MTD's soft edges: 128)


@dataclasses.dataclass
class Dataset:
  """Decoded, resized arrays of one category. Images uint8 (N, H, W, C); masks bool (N, H, W)."""
  name: str
  category: str
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray | None = None
  test_masks: np.ndarray | None = None
  test_labels: np.ndarray | None = None
  test_defects: tuple = ()
  test_names: tuple = ()


def list_images(folder):
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise DataError(f'folder {folder} does not exist')
  return sorted(str(p) for p in folder.iterdir() if p.suffix in IMAGE_EXTS and p.is_file())


def require_dir(path, what):
  path = pathlib.Path(path)
  if not path.is_dir():
    raise DataError(f'{what}: folder {path} does not exist')
  return path


def _open(path):
  try:
    im = Image.open(path)
    im.load()  # decode now: a truncated file fails here, not later
    return im
  except FileNotFoundError:
    raise DataError(f'{path}: file does not exist') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f'{path}: unreadable or truncated image ({e})') from None


def read_image(path, resolution, channels):
  """-> uint8 (resolution, resolution, channels); grayscale is widened to 3 when asked."""
  im = _open(path).convert('L' if channels == 1 else 'RGB')
  im = im.resize((resolution, resolution), Image.BILINEAR)
  arr = np.asarray(im, np.uint8)
  return arr[..., None] if channels == 1 else arr


def read_mask(path, image_path, resolution, mask_min=1):
  """-> bool (resolution, resolution): binarised at full size (>= mask_min), then resized."""
  im = _open(path).convert('L')
  size = Image.open(image_path).size
  if im.size != size:
    raise DataError(f'{path}: mask size {im.size} does not match its image '
                    f'{image_path} size {size}')
  binary = Image.fromarray(((np.asarray(im) >= mask_min) * 255).astype(np.uint8))
  return np.asarray(binary.resize((resolution, resolution), Image.BILINEAR)) >= 128


def _cache_key(samples, resolution, channels):
  h = hashlib.sha1(json.dumps([resolution, channels]).encode())
  for s in samples:
    for p in (s.image, s.mask):
      if p:
        st = os.stat(p)
        h.update(f'{p}:{st.st_size}:{st.st_mtime_ns};'.encode())
    h.update(f'{s.label}{s.defect}{s.mask_min}'.encode())
  return h.hexdigest()[:16]


def decode(samples, resolution, channels, cache_dir, with_masks):
  """Decodes (in threads) and caches as .npz so each file is decoded once per resolution."""
  samples = list(samples)
  cache = pathlib.Path(cache_dir) / f'{_cache_key(samples, resolution, channels)}.npz'
  if cache.exists():
    with np.load(cache) as z:
      return z['images'], (z['masks'] if with_masks else None)
  with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
    images = list(pool.map(lambda s: read_image(s.image, resolution, channels), samples))
    masks = None
    if with_masks:
      zero = np.zeros((resolution, resolution), bool)
      masks = list(pool.map(
          lambda s: read_mask(s.mask, s.image, resolution, s.mask_min) if s.mask else zero, samples))
  images = np.stack(images) if images else np.zeros((0, resolution, resolution, channels), np.uint8)
  masks = np.stack(masks) if with_masks and masks else (
      np.zeros((0, resolution, resolution), bool) if with_masks else None)
  cache.parent.mkdir(parents=True, exist_ok=True)
  tmp = cache.with_name(cache.name + f'.tmp{os.getpid()}.npz')
  np.savez(tmp, images=images, **({'masks': masks} if with_masks else {}))
  os.replace(tmp, cache)
  return images, masks
