"""The Python API: train, evaluate, load a finished run and predict on arrays or files.

    import rcae_jax
    detector = rcae_jax.load('runs/demo')
    pred = detector.predict(images)        # uint8 or float [0, 1], (B, H, W, C), or paths
    pred.maps, pred.scores, pred.is_anomalous

The command line calls these functions, so a notebook and `python -m rcae_jax` take one path
(`predict` writes its PNGs and CSVs from `Detector.predict`). Inputs at another size than the
run's are resized the way the data loader resizes files (PIL bilinear; with the run's
data.resize='keep', aspect kept and padded by reflection, the padding left out of the score),
and maps come back at the input's size.
"""
import dataclasses
import os
import pathlib
import re

import numpy as np
from PIL import Image

from rcae_jax import checkpoints, files, inference, methods, parallel, sizes
from rcae_jax import config as config_lib
from rcae_jax.data import common
from rcae_jax.evaluators import threshold as threshold_lib


class InputError(common.DataError):
  """Images the detector cannot take (shape, dtype, channels, range): one line."""


@dataclasses.dataclass
class Prediction:
  """maps: (B, H, W) float32 at the input's size (a list of (H_i, W_i) when the inputs are
  a list: paths or arrays of several sizes); scores: (B,) image scores; is_anomalous: (B,)
  bool, score > threshold, or None when the run has no threshold."""
  maps: object
  scores: np.ndarray
  is_anomalous: np.ndarray | None
  threshold: float | None


class Detector:
  """A finished run: its config, parameters and decision threshold."""

  def __init__(self, config, params, calibration=None, workdir=None):
    self.config = config
    self.workdir = workdir
    self.calibration = dict(calibration or {'threshold': None})
    self.threshold = self.calibration.get('threshold')
    # on the inference mesh once, not copied per call
    self.params = parallel.replicate(params, inference.default_mesh())

  @property
  def input_shape(self):
    """(H, W, C) the networks run at; other sizes are resized to it."""
    return sizes.image_size(self.config) + (self.config.data.channels,)

  def __repr__(self):
    c = self.config
    return (f'Detector({self.workdir or "<in memory>"}: method={c.method}, stages={c.stages}, '
            f'input {self.input_shape}, threshold={self.threshold})')

  def _model_inputs(self, images):
    """-> (model-size batch, content boxes (B, 4) or None when stretched, input sizes,
    whether the input was a list)."""
    if isinstance(images, (str, os.PathLike)):
      images = [images]
    if isinstance(images, np.ndarray) or hasattr(images, '__array__') and not isinstance(
        images, (list, tuple)):
      batch = np.asarray(images)
      if batch.ndim != 4:
        raise InputError(f'images: expected a batch (B, H, W, C) with C = '
                         f'{self.config.data.channels}, got shape {batch.shape} (one image: '
                         f'pass images[None])')
      return (*self._resized(list(batch), 'images'), [batch.shape[1:3]] * len(batch), False)
    items = list(images)
    if not items:
      raise InputError('images: an empty list')
    arrays = [self._read(item, i) for i, item in enumerate(items)]
    return (*self._resized(arrays, None), [a.shape[:2] for a in arrays], True)

  def _read(self, item, i):
    if isinstance(item, (str, os.PathLike)):
      return common.read_image(item, None, self.config.data.channels)
    arr = np.asarray(item)
    if arr.ndim == 2 and self.config.data.channels == 1:
      arr = arr[..., None]
    if arr.ndim != 3:
      raise InputError(f'images[{i}]: expected an image (H, W, {self.config.data.channels}) or '
                       f'a path, got shape {arr.shape}')
    return arr

  def _resized(self, arrays, name):
    """-> (batch at the networks' size, content boxes (B, 4) or None when stretched)."""
    h, w, ch = self.input_shape
    keep = self.config.data.get('resize', 'stretch') == 'keep'
    # all uint8: kept uint8, so the networks divide by 255 as in training and evaluation
    dtype = np.uint8 if all(a.dtype == np.uint8 for a in arrays) else np.float32
    out = np.empty((len(arrays), h, w, ch), dtype)
    boxes = np.empty((len(arrays), 4), np.int32)
    for i, a in enumerate(arrays):
      where = f'{name or "images"}[{i}]'
      if a.shape[-1] != ch:
        raise InputError(f'{where}: {a.shape[-1]} channels, the detector takes {ch} '
                         f'(data.channels of the run)')
      boxes[i] = sizes.fit_box(a.shape[:2], (h, w)) if keep else (0, 0, h, w)
      out[i] = sizes.pad_into(_to_model(a, tuple(int(v) for v in boxes[i, 2:]), where, dtype),
                              boxes[i], (h, w))
    return out, (boxes if keep else None)

  def predict(self, images, batch_size=None):
    """-> Prediction of images: a uint8 or float ([0, 1]) array (B, H, W, C), or a list of
    paths or (H, W, C) arrays of any sizes."""
    x, boxes, hws, as_list = self._model_inputs(images)
    valid = None if boxes is None else sizes.Valid(boxes, x.shape[1:3])
    out = inference.run(self.config, self.params, x, batch_size=batch_size, valid=valid)
    if boxes is not None:  # the padding cut off: the map covers the image only
      out['map'] = [sizes.crop_box(m, b) for m, b in zip(out['map'], boxes)]
    maps = [resize_map(m, hw) for m, hw in zip(out['map'], hws)]
    scores = np.asarray(out['score'], np.float64)
    decisions = None if self.threshold is None else scores > self.threshold
    return Prediction(maps if as_list else np.stack(maps), scores, decisions, self.threshold)

  def reconstructions(self, images, batch_size=None):
    """-> {'input': (B, h, w, C) the images at the networks' size, float32 [0, 1];
    'recon': R_1..R_N (N, B, h, w, C); 'enhanced': D_1..D_N when the method has a DPN}."""
    x, boxes, _, _ = self._model_inputs(images)
    valid = None if boxes is None else sizes.Valid(boxes, x.shape[1:3])
    out = inference.run(self.config, self.params, x, with_sequences=True, batch_size=batch_size,
                        valid=valid)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x
    return {'input': x, **{k: out[k] for k in inference.SEQUENCES if k in out}}


def _to_model(a, hw, where, dtype):
  """One image (H, W, C) at hw, as dtype (float: [0, 1]): uint8 resized as
  `common.read_image` resizes files (so an array and its file score the same), floats per
  channel."""
  if a.dtype == np.uint8:
    if a.shape[:2] != hw:
      im = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
      a = np.asarray(im.resize(hw[::-1], Image.BILINEAR)).reshape(hw + (a.shape[-1],))
    return a if dtype == np.uint8 else a.astype(np.float32) / 255.0
  if not np.issubdtype(a.dtype, np.floating):
    raise InputError(f'{where}: dtype {a.dtype}; the detector takes uint8 (0-255) or float '
                     f'in [0, 1]')
  a = a.astype(np.float32)
  if not np.isfinite(a).all():
    raise InputError(f'{where}: {np.size(a) - np.isfinite(a).sum()} values are not finite '
                     f'(NaN or inf); the detector takes floats in [0, 1]')
  if a.min() < 0 or a.max() > 1:
    raise InputError(f'{where}: float values in [{a.min():.4g}, {a.max():.4g}]; the detector '
                     f'takes floats in [0, 1] (divide 8-bit images by 255)')
  if a.shape[:2] != hw:
    a = np.stack([np.asarray(Image.fromarray(a[..., c], 'F').resize(hw[::-1], Image.BILINEAR))
                  for c in range(a.shape[-1])], axis=-1)
  return a


def resize_map(amap, hw):
  """A map (h, w) at another size (H, W), bilinear (float, no rounding)."""
  amap = np.asarray(amap, np.float32)
  if tuple(amap.shape) == tuple(hw):
    return amap
  return np.asarray(Image.fromarray(amap, 'F').resize((hw[1], hw[0]), Image.BILINEAR))


def load(workdir):
  """-> the Detector of a finished run (its model bundle and calibration.json)."""
  config, params = checkpoints.load_bundle(workdir)
  return Detector(config, params, threshold_lib.load(workdir), pathlib.Path(workdir))


def _config(config, data=None, overrides=()):
  """A config object, a shipped name ('tiny', 'mtd:cpu') or a path, with --data and --set."""
  extra = config_lib.data_overrides(data, None) + list(overrides)
  if isinstance(config, (str, os.PathLike)):
    return config_lib.load_config(str(config), extra)
  return config_lib.apply_overrides(config, extra) if extra else config


def train(config='base', data=None, workdir=None, overrides=()):
  """Trains (or resumes) a run; -> its Detector. config: a ConfigDict, a shipped name or a
  path; data: 'NAME[:ROOT]' as --data takes it (e.g. 'mtd:/data/mtd'); overrides:
  ['KEY=VALUE', ...] as --set takes them."""
  from rcae_jax import training  # pylint: disable=g-import-not-at-top
  if workdir is None:
    raise config_lib.ConfigError('train: workdir= is needed (the run folder)')
  config = _config(config, data, overrides)
  params = training.train(config, workdir)
  if params is None:
    return None
  # from the trained params, not the bundle: reading it back is collective across processes
  # (Orbax), and only process 0 writes calibration.json (the others' Detector has no threshold)
  return Detector(config, params, threshold_lib.load(workdir), pathlib.Path(workdir))


# which data a run is evaluated on (another copy, another category), not what it trained on
_WHERE_DATA = ('data.name', 'data.root', 'data.category', 'data.source', 'data.prepared_dir',
               'data.cache_dir', 'data.read_threads')


def eval_name(overrides=()):
  """The folder of a run that `evaluate` writes to: 'eval', or with scoring or inference
  overrides 'eval_<key=value_...>' (the data's location does not name it), so that scoring
  a run another way never overwrites its own results."""
  changed = sorted(o for o in overrides
                   if not methods.matches(o.partition('=')[0], _WHERE_DATA))
  if not changed:
    return 'eval'
  return 'eval_' + '_'.join(re.sub(r'[^A-Za-z0-9.=+,()-]', '', o) for o in changed)


def _scoring_overrides(data, overrides):
  """data= and overrides as one list, refused when they would change what was trained."""
  overrides = config_lib.data_overrides(data, None) + list(overrides)
  trained = [o.partition('=')[0] for o in overrides
             if not methods.matches(o.partition('=')[0], methods.EVAL_KEYS + _WHERE_DATA)]
  if trained:
    raise config_lib.ConfigError(
        f'evaluate: {", ".join(trained)} would change what the networks were trained on; '
        f'only {", ".join(methods.EVAL_KEYS + _WHERE_DATA)} can be set here (a larger image '
        'than the training one: train with stageK.crop and data.size)')
  return overrides


def validate(workdir, data=None, overrides=()):
  """A finished run's validation set (held-out normals and planted pseudo-anomalies) scored
  under scoring or inference overrides, the test set never loaded: how to choose tiles or
  a score before any test reading. -> validation.json's content, also written to
  eval_<overrides>/validation.json; without overrides, the run's own validation.json."""
  from rcae_jax import evaluators, lock  # pylint: disable=g-import-not-at-top
  overrides = _scoring_overrides(data, overrides)
  with lock.hold(workdir, 'evaluate', create=False):
    ctx = evaluators.Context.of_run(workdir, overrides, need_test=False,
                                    eval_name=eval_name(overrides))
    result = evaluators.run(('validation',), ctx)['validation']
    if result is None:
      raise config_lib.ConfigError(f'{workdir}: the run held out no normal images '
                                   '(data.val_fraction=0): there is no validation set')
    if overrides and ctx.is_main:
      files.write_json(ctx.eval_dir / 'validation.json', {**result, 'overrides': overrides})
    return result


def evaluate(workdir, data=None, overrides=(), n_pictures=8):
  """A finished run's test set through the ON_TEST evaluators (validation, test metrics,
  pictures: eval/, or eval_<overrides>/ with scoring or inference overrides: `eval_name`);
  -> that metrics.json's content. With another data= or overrides, the run's own
  validation.json and calibration are left as they are."""
  from rcae_jax import evaluators, lock  # pylint: disable=g-import-not-at-top
  overrides = _scoring_overrides(data, overrides)
  with lock.hold(workdir, 'evaluate', create=False):
    ctx = evaluators.Context.of_run(workdir, overrides, need_test=True,
                                    eval_name=eval_name(overrides), n_pictures=n_pictures)
    return evaluators.run(evaluators.ON_TEST, ctx)['test_metrics']
