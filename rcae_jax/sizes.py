"""Image sizes: the (height, width) the images are resized to (`data.size`), the crops a
stage trains on (`stageK.crop`) and the tiles inference runs on (`infer.tile`).

The networks are fully convolutional: a stage may train on crops of the images and
inference runs on the whole image (or on tiles of it) at `data.size`. Every size is stored as
(h, w); an int or a 1-tuple is a square. `data.resolution` is the older name of a square
`data.size`: configs that set it, and runs that saved it, load as `data.size = (r, r)`.
"""
import math

import numpy as np

RESIZE = ('stretch', 'keep')  # data.resize
SIZE_KEYS = ('data.size', 'stage1.crop', 'stage2.crop', 'stage3.crop', 'fae.crop', 'infer.tile')


def as_pair(value):
  """int | (s,) | (h, w) -> (h, w); () -> () (off)."""
  if isinstance(value, int) and not isinstance(value, bool):
    return (value, value)
  value = tuple(value)
  return (value[0], value[0]) if len(value) == 1 else value


def is_pair(value):
  return (len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                  for v in value))


def parse(text):
  """'256' -> (256, 256), '128x256' -> (128, 256) (command-line sizes)."""
  parts = str(text).lower().replace('×', 'x').split('x')
  try:
    pair = as_pair(tuple(int(p) for p in parts))
  except ValueError:
    pair = ()
  if len(parts) > 2 or not is_pair(pair):
    raise ValueError(f'size {text!r} is not S or HxW with positive ints (256, 128x256)')
  return pair


def image_size(config):
  """(h, w) of the images every network sees at validation, test and `predict`."""
  return as_pair(config.data.size)


def train_size(config, group):
  """(h, w) of the examples stage group `group` trains on: its crop, or the image size."""
  crop = as_pair(config[group].get('crop', ()))
  return crop if crop else image_size(config)


def scale(config):
  """Pixel scale of the images against 256² (score.sigma and score.mean_size are given at
  256²): the geometric mean of the sides over 256, 1 at 256²."""
  h, w = image_size(config)
  return math.sqrt(h * w) / 256


def name(size):
  """'64' for a square, '128x256' otherwise (file and folder names)."""
  h, w = as_pair(size)
  return f'{h}' if h == w else f'{h}x{w}'


def label(size):
  """'64²' for a square, '128×256' otherwise (messages and tables)."""
  h, w = as_pair(size)
  return f'{h}²' if h == w else f'{h}×{w}'


def nearest(n, multiple):
  """The multiples of `multiple` nearest n (one or two, positive)."""
  if n <= multiple:
    return [multiple]
  lo = n // multiple * multiple
  return [n] if lo == n else [lo, lo + multiple]


def divisible(size, multiple, what, need):
  """need(...) that both sides of `size` are multiples of `multiple`, naming the nearest valid
  sides in the message."""
  for side, axis in zip(as_pair(size), ('height', 'width')):
    need(side % multiple == 0,
         f'{what}: {axis} {side} is not a multiple of {multiple} (nearest valid: '
         f'{" or ".join(map(str, nearest(side, multiple)))})')


def migrate(config):
  """Moves an old `data.resolution` into `data.size` and writes every size as (h, w), in
  place (the config's own lock is respected: only existing keys are set)."""
  data = config.data
  if data.get('resolution') is not None:
    with data.unlocked():
      data.size = (data.resolution, data.resolution)
      data.resolution = None
  for key in SIZE_KEYS:
    group, leaf = key.split('.')
    node = config.get(group)
    if node is not None and leaf in node:
      value = as_pair(node[leaf])
      off = all(v == 0 for v in value)  # () or 0
      with node.unlocked():
        node[leaf] = () if off and key != 'data.size' else tuple(value)
  return config


def network_sizes(config, groups):
  """[(key, (h, w))] of every size the networks run at: the images, the crops of the stage
  groups `groups` and the inference tiles (what a method's halvings must divide)."""
  out = [('data.size', image_size(config))]
  for group, leaf in [(g, 'crop') for g in groups] + [('infer', 'tile')]:
    if config[group].get(leaf):
      out.append((f'{group}.{leaf}', as_pair(config[group][leaf])))
  return out


def validate(c, need):
  """Sizes are pairs of positive ints; crops and tiles fit inside the image."""
  size = image_size(c)
  need(c.data.get('resize', 'stretch') in RESIZE,
       f'data.resize={c.data.get("resize")!r} must be one of {RESIZE}')
  need(is_pair(size), f'data.size={c.data.size!r} must be an int or (height, width) of '
       'positive ints')
  for key in SIZE_KEYS[1:]:
    group, leaf = key.split('.')
    value = c[group].get(leaf, ()) if group in c else ()
    if not value:
      continue
    pair = as_pair(value)
    need(is_pair(pair), f'{key}={value!r} must be an int or (height, width) of positive ints '
         '(() = off)')
    need(pair[0] <= size[0] and pair[1] <= size[1],
         f'{key}={pair} does not fit in data.size={size}')


def fit_box(full_hw, size):
  """(top, left, h, w) of an image of size full_hw = (H, W) resized into size (h, w) with its
  aspect ratio kept (`data.resize='keep'`), centred: the rest of (h, w) is padding."""
  (big_h, big_w), (h, w) = full_hw, as_pair(size)
  s = min(h / big_h, w / big_w)
  ch, cw = max(1, min(h, round(big_h * s))), max(1, min(w, round(big_w * s)))
  return ((h - ch) // 2, (w - cw) // 2, ch, cw)


def box_masks(boxes, size):
  """bool (N, h, w): True inside each image's content box (N, 4) (top, left, h, w)."""
  h, w = as_pair(size)
  boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
  ys, xs = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
  t, l, bh, bw = (boxes[:, i, None, None] for i in range(4))
  return (ys >= t) & (ys < t + bh) & (xs >= l) & (xs < l + bw)


class Valid:
  """The pixels that are image, not padding, of N images kept-aspect in (h, w): an array-like
  view (len, shape, [i], [slice], [indices]) that builds the bool masks (N, h, w) only for
  what is indexed, from the content boxes (N, 4) (top, left, h, w)."""

  def __init__(self, boxes, size):
    self.boxes = np.asarray(boxes, np.int32).reshape(-1, 4)
    self.size = as_pair(size)
    self.shape = (len(self.boxes),) + self.size
    self.dtype = np.dtype(bool)

  def __len__(self):
    return len(self.boxes)

  def __getitem__(self, key):
    if isinstance(key, (int, np.integer)):
      return box_masks(self.boxes[key], self.size)[0]
    return box_masks(self.boxes[key], self.size)

  def __array__(self, dtype=None, copy=None):
    del copy
    out = self[:]
    return out if dtype is None else out.astype(dtype)

  def subset(self, key):
    """The view of images `key` (an index array or slice)."""
    return Valid(self.boxes[key], self.size)


def pad_into(a, box, size, mode='symmetric'):
  """a (h, w, ...), the image resized into box (top, left, h, w), placed in size (H, W) and
  padded around (by reflection; mode='constant': zeros): what `crop_box` undoes. The one
  padding of kept-aspect images, for files and for arrays given to `predict`."""
  t, l, h, w = (int(v) for v in box)
  big_h, big_w = as_pair(size)
  if (h, w) == (big_h, big_w):
    return a
  widths = ((t, big_h - t - h), (l, big_w - l - w)) + ((0, 0),) * (np.ndim(a) - 2)
  return np.pad(a, widths, mode=mode)


def crop_box(a, box, axis=0):
  """a with its axes (axis, axis + 1) cut to box (top, left, h, w): the image without padding."""
  t, l, h, w = (int(v) for v in box)
  index = [slice(None)] * np.ndim(a)
  index[axis], index[axis + 1] = slice(t, t + h), slice(l, l + w)
  return np.asarray(a)[tuple(index)]
