"""Prepared data: one category at one resolution as TFDS array_record, read lazily.

`prepare(config)` runs a TFDS `GeneratorBasedBuilder` over the user's local copy of any
layout (MVTec AD, VisA, MTD, folder, builtin) and writes `train` (every normal training
image, in the layout's order) and `test` splits of (image, mask, label, defect, file). Images
are stored decoded and resized (by the same functions as the in-memory path, so the arrays
are identical) as zlib-compressed uint8 tensors: `tfds.features.Image` would need TensorFlow
to encode, and neither building nor reading here needs it. Shuffling is disabled so that
record i is sample i and the held-out split is the same index split as in memory.

Reading (`load`) returns `Records`: array-like views (len, shape, [i], [slice], [indices])
that decode only what is indexed, so host memory does not grow with the dataset.
"""
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from rcae_jax import sizes
from rcae_jax.data import common

VERSION = '1.0.0'


def config_name(layout, category, size, channels, resize='stretch'):
  """'mvtec-bottle-64px-3ch' (a square, named as before sizes had two sides), or
  'mtd-MT_Free-128x256px-1ch', or kept-aspect 'mtd-MT_Free-128x256px-1ch-keep'."""
  return f'{layout}-{category}-{sizes.name(size)}px-{channels}ch' + _suffix(resize)


def _suffix(resize):
  return '' if resize == 'stretch' else f'-{resize}'


class RcaeImages(tfds.core.GeneratorBasedBuilder):
  """One category of an anomaly-detection layout at one size (h, w)."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, layout, category, size, channels, resize='stretch', samples=None,
               **kwargs):
    h, w = sizes.as_pair(size)
    # a square's spec reads as it did before sizes had two sides (and data.resize existed)
    self._spec = dict(layout=layout, category=category, channels=channels,
                      **({'resolution': h} if h == w else {'size': [h, w]}),
                      **({} if resize == 'stretch' else {'resize': resize}))
    self._size, self._resize = (h, w), resize
    self._samples = samples  # (train, test) lists of common.Sample; only to build
    super().__init__(config=tfds.core.BuilderConfig(
        name=config_name(layout, category, size, channels, resize), version=VERSION),
                     file_format='array_record', **kwargs)

  def _info(self):
    (h, w), c = self._size, self._spec['channels']
    return tfds.core.DatasetInfo(
        builder=self,
        description=f'{self._spec} for rcae_jax',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(h, w, c), dtype=np.uint8, encoding='zlib'),
            'mask': tfds.features.Tensor(shape=(h, w), dtype=np.uint8, encoding='zlib'),
            'label': np.int32,
            'defect': tfds.features.Text(),
            'file': tfds.features.Text(),
        }),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._samples is None:
      raise common.DataError(f'{self.data_dir}: not prepared, and no source to prepare from')
    train, test = self._samples
    self.info.metadata['spec'] = self._spec
    self.info.metadata['splits'] = {
        name: {'label': [s.label for s in split], 'defect': [s.defect for s in split],
               'file': [s.image for s in split],
               # kept-aspect: where each image lies in (h, w) (the rest is padding)
               **({'box': [list(common.content_box(s.image, self._size, self._resize))
                           for s in split]} if self._resize != 'stretch' else {})}
        for name, split in (('train', train), ('test', test))}
    return {'train': self._generate_examples(train, False),
            'test': self._generate_examples(test, True)}

  def _generate_examples(self, samples, with_masks):
    r, c, resize = self._size, self._spec['channels'], self._resize
    zero = np.zeros(r, np.uint8)

    def read(s):
      image = common.read_image(s.image, r, c, resize)
      mask = (common.read_mask(s.mask, s.image, r, s.mask_min, resize).astype(np.uint8)
              if with_masks and s.mask else zero)
      return {'image': image, 'mask': mask, 'label': s.label, 'defect': s.defect,
              'file': s.image}

    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
      for i, example in enumerate(pool.map(read, samples)):
        yield f'{i:08d}', example


def prepared_dir(config, cache_dir):
  return pathlib.Path(config.data.prepared_dir or cache_dir / 'prepared')


def builder(config, cache_dir, category, samples=None):
  d = config.data
  # TFDS warns "Using custom data configuration" for every config not declared on the class:
  # here every config is one, by design
  with _quiet_absl():
    return RcaeImages(layout=d.name, category=category, size=sizes.image_size(config),
                      channels=d.channels, resize=d.get('resize', 'stretch'), samples=samples,
                      data_dir=str(prepared_dir(config, cache_dir)))


@contextlib.contextmanager
def _quiet_absl():
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def prepare(config, cache_dir, category, samples):
  """Builds (once) the prepared category; returns its directory."""
  b = builder(config, cache_dir, category, samples)
  b.download_and_prepare()
  return pathlib.Path(b.data_path)


def prepared_categories(config, cache_dir):
  """Categories prepared for this layout, size and channels, sorted."""
  d = config.data
  base = prepared_dir(config, cache_dir) / 'rcae_images'
  suffix = (f'-{sizes.name(sizes.image_size(config))}px-{d.channels}ch'
            + _suffix(d.get('resize', 'stretch')))
  prefix = f'{d.name}-'
  if not base.is_dir():
    return []
  return sorted(p.name[len(prefix):-len(suffix)] for p in base.iterdir()
                if p.name.startswith(prefix) and p.name.endswith(suffix)
                and (p / VERSION / 'dataset_info.json').exists())


class Records:
  """A read-only array view of one field of a prepared split at the given record indices."""

  def __init__(self, source, field, indices, shape, dtype, description):
    self._source, self._field = source, field
    self._indices = np.asarray(indices, np.int64)
    self.shape = (len(self._indices),) + tuple(shape)
    self.dtype = np.dtype(dtype)
    self.description = description

  def __len__(self):
    return len(self._indices)

  def _one(self, record):
    return np.asarray(self._source[int(record)][self._field]).astype(self.dtype, copy=False)

  def __getitem__(self, key):
    if isinstance(key, (int, np.integer)):
      return self._one(self._indices[key])
    picked = self._indices[key]
    out = np.empty((len(picked),) + self.shape[1:], self.dtype)
    for j, record in enumerate(picked):
      out[j] = self._one(record)
    return out

  def __array__(self, dtype=None, copy=None):
    del copy
    out = self[:]
    return out if dtype is None else out.astype(dtype)


def load(config, cache_dir, category, split_indices, need_test):
  """-> common.Dataset whose arrays are `Records` views over the prepared category."""
  d = config.data
  b = builder(config, cache_dir, category)
  if not (pathlib.Path(b.data_path) / 'dataset_info.json').exists():
    raise common.DataError(
        f'{b.data_path}: {d.name}/{category} at {sizes.name(sizes.image_size(config))}px, '
        f'{d.channels} channel(s), data.resize={d.get("resize", "stretch")} is not '
        f'prepared; run python -m rcae_jax prepare --config <the same config> '
        f'--data {d.name}:<root> --category {category}')
  meta = b.info.metadata['splits']
  (h, w), c = sizes.image_size(config), d.channels
  resize = d.get('resize', 'stretch')
  name = config_name(d.name, category, (h, w), c, resize)
  train_src = b.as_data_source('train')
  train_idx, val_idx = split_indices(len(train_src))
  digest = hashlib.sha1(train_idx.tobytes()).hexdigest()[:12]

  def valid(split, idx):
    return None if resize == 'stretch' else sizes.Valid(
        np.asarray(meta[split]['box'], np.int32).reshape(-1, 4)[idx], (h, w))

  ds = common.Dataset(
      d.name, category,
      Records(train_src, 'image', train_idx, (h, w, c), np.uint8, f'{name}/train:{digest}'),
      Records(train_src, 'image', val_idx, (h, w, c), np.uint8, f'{name}/val'),
      train_valid=valid('train', train_idx), val_valid=valid('train', val_idx))
  if need_test:
    test_src = b.as_data_source('test')
    idx = np.arange(len(test_src))
    ds.test = Records(test_src, 'image', idx, (h, w, c), np.uint8, f'{name}/test')
    ds.test_masks = Records(test_src, 'mask', idx, (h, w), bool, f'{name}/test_masks')
    ds.test_labels = np.asarray(meta['test']['label'], np.int32)
    ds.test_defects = tuple(meta['test']['defect'])
    ds.test_names = tuple(meta['test']['file'])
    ds.test_valid = valid('test', idx)
  return ds
