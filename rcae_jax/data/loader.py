"""One entry point for every layout: config.data -> decoded `Dataset` of one category."""
import os
import pathlib

import numpy as np

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


def load_split(config):
  """-> (category, train samples, val samples, test samples), checked, before decoding."""
  root = resolve_root(config)
  layout = LAYOUTS[config.data.name]
  cats = layout.categories(root)
  category = config.data.category or cats[0]
  if category not in cats:
    raise DataError(f'category {category!r} not in {root}; found {cats}')
  train, test = layout.samples(root, category)
  if not train:
    raise DataError(f'{root} category {category!r}: no normal training images (empty category)')
  rng = np.random.default_rng(config.data.seed)
  order = rng.permutation(len(train))
  n_val = int(round(len(train) * config.data.val_fraction))
  if config.data.val_fraction > 0 and len(train) >= 2:
    n_val = max(1, n_val)
  val = [train[i] for i in sorted(order[:n_val])]
  rest = sorted(order[n_val:])
  n_keep = max(1, int(round(len(rest) * config.data.train_fraction)))
  train = [train[i] for i in sorted(rng.permutation(rest)[:n_keep])]
  return category, train, val, test


def load(config, need_test=False):
  """Decoded arrays of the configured category (cached per resolution)."""
  category, train, val, test = load_split(config)
  if need_test:
    if not test:
      raise DataError(f'{config.data.name} category {category!r}: no test images')
    if not any(s.label for s in test):
      raise DataError(f'{config.data.name} category {category!r}: the test split has no '
                      'anomalies, so no metric can be computed')
  res, ch, cdir = config.data.resolution, config.data.channels, cache_dir(config) / 'decoded'
  train_x, _ = decode(train, res, ch, cdir, with_masks=False)
  val_x, _ = decode(val, res, ch, cdir, with_masks=False)
  ds = Dataset(config.data.name, category, train_x, val_x)
  if need_test:
    ds.test, ds.test_masks = decode(test, res, ch, cdir, with_masks=True)
    ds.test_labels = np.array([s.label for s in test], np.int32)
    ds.test_defects = tuple(s.defect for s in test)
    ds.test_names = tuple(s.image for s in test)
  return ds
