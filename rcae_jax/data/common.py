"""Reading images and masks with clear errors, and the in-memory `Dataset`."""
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib

import numpy as np
from PIL import Image, ImageOps

from rcae_jax import sizes

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
  """Decoded, resized arrays of one category. Images uint8 (N, H, W, C); masks bool (N, H, W).
  With data.resize='keep', `*_valid` are `sizes.Valid` views of the pixels that are image,
  not padding (None when stretched: every pixel is)."""
  name: str
  category: str
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray | None = None
  test_masks: np.ndarray | None = None
  test_labels: np.ndarray | None = None
  test_defects: tuple = ()
  test_names: tuple = ()
  train_valid: object = None
  val_valid: object = None
  test_valid: object = None


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
    return _decoded(im, path)
  except FileNotFoundError:
    raise DataError(f'{path}: file does not exist') from None
  except Image.DecompressionBombError as e:
    raise DataError(f'{path}: image too large to decode safely ({e})') from None
  except (OSError, SyntaxError, ValueError) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(f'{path}: unreadable or truncated image ({e})') from None


HIGH_BIT = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


def _decoded(im, path):
  """A decoded image in a mode PIL converts without loss of meaning: EXIF orientation applied
  (cameras store portrait shots rotated); 16-bit grey levels scaled to 8 bits over the full
  16-bit range (v / 257: 65535 -> 255, so an image keeps its brightness relative to the
  sensor's range, not stretched per image); 32-bit float images must lie in [0, 1] (x 255).
  PIL's own conversion clips 16-bit values to 255 and floats to [0, 255]: a silent constant
  image."""
  im = ImageOps.exif_transpose(im)
  if im.mode in HIGH_BIT:
    arr = np.asarray(im).astype(np.int64)
    if arr.min() < 0 or arr.max() > 65535:
      raise DataError(f'{path}: 32-bit integer image with values {arr.min()}..{arr.max()} '
                      'outside the 16-bit range 0..65535; save it as 8- or 16-bit')
    return Image.fromarray(np.round(arr / 257.0).astype(np.uint8), 'L')
  if im.mode == 'F':
    arr = np.asarray(im, np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if not np.isfinite(arr).all() or lo < 0 or hi > 1:
      raise DataError(f'{path}: 32-bit float image with values in [{lo:.4g}, {hi:.4g}]; float '
                      'images must lie in [0, 1] (or save it as 8- or 16-bit)')
    return Image.fromarray(np.round(arr * 255.0).astype(np.uint8), 'L')
  return im


def read_image(path, size, channels, resize='stretch'):
  """-> uint8 (h, w, channels) for size (h, w) (an int: a square), or at the file's own size
  when size is None; any mode `_decoded` accepts: palette and LA/RGBA/CMYK through PIL (alpha dropped),
  grayscale widened to 3 channels when asked, colour to luma for 1. resize='keep': the
  aspect ratio kept (`sizes.fit_box`), the rest of (h, w) padded by reflection."""
  im = _open(path).convert('L' if channels == 1 else 'RGB')
  if size is not None:
    im, box = _fitted(im, size, resize)
  arr = np.asarray(im, np.uint8)
  if size is not None and box:
    arr = sizes.pad_into(arr, box, size)
  return arr[..., None] if channels == 1 else arr


def _fitted(im, size, resize):
  """(im resized, its box in size for `sizes.pad_into`, or None when stretched)."""
  h, w = sizes.as_pair(size)
  if resize != 'keep':
    return im.resize((w, h), Image.BILINEAR), None
  box = sizes.fit_box(im.size[::-1], (h, w))
  return im.resize((box[3], box[2]), Image.BILINEAR), box


def full_size(path):
  """(H, W) of an image file as decoded (EXIF orientation applied), header only."""
  try:
    with Image.open(path) as im:
      w, h = im.size
      swapped = im.getexif().get(0x0112) in (5, 6, 7, 8)  # rotated by 90 degrees
  except FileNotFoundError:
    raise DataError(f'{path}: file does not exist') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f'{path}: unreadable image ({e})') from None
  return (w, h) if swapped else (h, w)


def content_box(path, size, resize):
  """(top, left, h, w) of the image in path inside size (h, w): all of it when stretched."""
  size = sizes.as_pair(size)
  return sizes.fit_box(full_size(path), size) if resize == 'keep' else (0, 0) + size


def read_mask(path, image_path, size, mask_min=1, resize='stretch'):
  """-> bool (h, w) for size (h, w) (an int: a square): binarised at full size (>= mask_min,
  on the 8-bit scale `_decoded` gives), then resized as its image (kept-aspect: the padding
  is never a defect)."""
  im = _open(path).convert('L')
  full = full_size(image_path)[::-1]
  if im.size != full:
    raise DataError(f'{path}: mask size {im.size} does not match its image '
                    f'{image_path} size {full}')
  binary = Image.fromarray(((np.asarray(im) >= mask_min) * 255).astype(np.uint8))
  binary, box = _fitted(binary, size, resize)
  out = np.asarray(binary) >= 128
  return sizes.pad_into(out, box, size, mode='constant') if box else out


def _cache_key(samples, size, channels, resize='stretch'):
  h, w = size  # a square hashes as the int it was before sizes had two sides
  # stretched images hash as before data.resize existed, so their caches stay valid
  spec = [h if h == w else [h, w], channels] + ([resize] if resize != 'stretch' else [])
  h = hashlib.sha1(json.dumps(spec).encode())
  for s in samples:
    for p in (s.image, s.mask):
      if p:
        st = os.stat(p)
        h.update(f'{p}:{st.st_size}:{st.st_mtime_ns};'.encode())
    h.update(f'{s.label}{s.defect}{s.mask_min}'.encode())
  return h.hexdigest()[:16]


def decode(samples, size, channels, cache_dir, with_masks, resize='stretch'):
  """Decodes (in threads) at size (h, w) and caches as .npz so each file is decoded once per
  size -> (images, masks or None, content boxes (N, 4) or None when stretched)."""
  size, samples = sizes.as_pair(size), list(samples)
  keep = resize == 'keep'
  cache = pathlib.Path(cache_dir) / f'{_cache_key(samples, size, channels, resize)}.npz'
  if cache.exists():
    with np.load(cache) as z:
      return (z['images'], z['masks'] if with_masks else None,
              z['boxes'] if keep else None)
  with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
    images = list(pool.map(lambda s: read_image(s.image, size, channels, resize), samples))
    masks = None
    if with_masks:
      zero = np.zeros(size, bool)
      masks = list(pool.map(
          lambda s: read_mask(s.mask, s.image, size, s.mask_min, resize) if s.mask else zero,
          samples))
    boxes = (np.array(list(pool.map(lambda s: content_box(s.image, size, resize), samples)),
                      np.int32).reshape(-1, 4) if keep else None)
  images = np.stack(images) if images else np.zeros((0,) + tuple(size) + (channels,), np.uint8)
  masks = np.stack(masks) if with_masks and masks else (
      np.zeros((0,) + tuple(size), bool) if with_masks else None)
  cache.parent.mkdir(parents=True, exist_ok=True)
  tmp = cache.with_name(cache.name + f'.tmp{os.getpid()}.npz')
  np.savez(tmp, images=images, **({'masks': masks} if with_masks else {}),
           **({'boxes': boxes} if keep else {}))
  os.replace(tmp, cache)
  return images, masks, boxes
