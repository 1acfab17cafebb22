"""One entry point for every layout: config.data -> decoded `Dataset` of one category."""
import os
import pathlib

import numpy as np

from rcae_jax import sizes
from rcae_jax.data import builtin, folder, mtd, mvtec, visa
from rcae_jax.data.common import Dataset, DataError, decode

LAYOUTS = {'builtin': mvtec, 'mvtec': mvtec, 'visa': visa, 'mtd': mtd, 'folder': folder}


def cache_dir(config):
  return pathlib.Path(config.data.cache_dir or os.environ.get(
      'RCAE_JAX_CACHE', pathlib.Path.home() / '.cache' / 'rcae_jax'))


def resolve_root(config):
  if config.data.name == 'builtin':
    return builtin.build(pathlib.Path(config.data.root or cache_dir(config) / 'builtin'))
  if not config.data.root:
    raise DataError(f'data.root is empty: give the {config.data.name} dataset folder '
                    f'(--data {config.data.name}:/path or --set data.root=/path)')
  return pathlib.Path(config.data.root)


def categories(config):
  return LAYOUTS[config.data.name].categories(resolve_root(config))


def split_indices(n, config):
  """Held-out and training indices among n normal training images: a function of
  (n, data.seed, data.val_fraction, data.train_fraction) alone, sorted."""
  rng = np.random.default_rng(config.data.seed)
  order = rng.permutation(n)
  n_val = int(round(n * config.data.val_fraction))
  if config.data.val_fraction > 0 and n >= 2:
    n_val = max(1, n_val)
  val = np.sort(order[:n_val])
  rest = np.sort(order[n_val:])
  n_keep = max(1, int(round(len(rest) * config.data.train_fraction)))
  return np.sort(rng.permutation(rest)[:n_keep]), val


def _layout_samples(config):
  root = resolve_root(config)
  layout = LAYOUTS[config.data.name]
  cats = layout.categories(root)
  category = config.data.category or cats[0]
  if category not in cats:
    raise DataError(f'category {category!r} not in {root}; found {cats}')
  train, test = layout.samples(root, category)
  if not train:
    raise DataError(f'{root} category {category!r}: no normal training images (empty category)')
  return category, train, test


def load_split(config):
  """-> (category, train samples, val samples, test samples), checked, before decoding."""
  category, train, test = _layout_samples(config)
  train_idx, val_idx = split_indices(len(train), config)
  return category, [train[i] for i in train_idx], [train[i] for i in val_idx], test


def prepare(config):
  """Writes the configured category as TFDS array_record (see data/prepared.py)."""
  from rcae_jax.data import prepared  # pylint: disable=g-import-not-at-top
  category, train, test = _layout_samples(config)
  return prepared.prepare(config, cache_dir(config), category, (train, test))


def _check_test(config, category, labels):
  if not len(labels):
    raise DataError(f'{config.data.name} category {category!r}: no test images')
  if not np.any(labels):
    raise DataError(f'{config.data.name} category {category!r}: the test split has no '
                    'anomalies, so no metric can be computed')


def _load_prepared(config, need_test):
  # imported here: TensorFlow Datasets takes ~0.4 s to import, and decoded files need none of it
  from rcae_jax.data import prepared  # pylint: disable=g-import-not-at-top
  cats = prepared.prepared_categories(config, cache_dir(config))
  category = config.data.category or (cats[0] if cats else 'mtd' if config.data.name == 'mtd'
                                      else '<category>')
  ds = prepared.load(config, cache_dir(config), category,
                     lambda n: split_indices(n, config), need_test)
  if need_test:
    _check_test(config, category, ds.test_labels)
  return ds


def load(config, need_test=False):
  """The configured category: decoded arrays (data.source=files, cached per size) or
  lazy views of the prepared records (data.source=prepared)."""
  if config.data.source == 'prepared':
    return _load_prepared(config, need_test)
  category, train, val, test = load_split(config)
  if need_test:
    _check_test(config, category, [s.label for s in test])
  res, ch, cdir = sizes.image_size(config), config.data.channels, cache_dir(config) / 'decoded'
  resize = config.data.get('resize', 'stretch')
  valid = lambda boxes: None if boxes is None else sizes.Valid(boxes, res)
  train_x, _, train_b = decode(train, res, ch, cdir, with_masks=False, resize=resize)
  val_x, _, val_b = decode(val, res, ch, cdir, with_masks=False, resize=resize)
  ds = Dataset(config.data.name, category, train_x, val_x, train_valid=valid(train_b),
               val_valid=valid(val_b))
  if need_test:
    ds.test, ds.test_masks, test_b = decode(test, res, ch, cdir, with_masks=True, resize=resize)
    ds.test_valid = valid(test_b)
    ds.test_labels = np.array([s.label for s in test], np.int32)
    ds.test_defects = tuple(s.defect for s in test)
    ds.test_names = tuple(s.image for s in test)
  return ds
