"""The one inference path: images -> smoothed anomaly maps and image scores.

`make_inference` is the pure function; `compiled` jits it over a device mesh (params
replicated, the batch split over the devices, as in training); `batches` streams it over
host images in fixed-size batches (the last one padded) so a whole test set compiles once,
and `run` collects the stream.
`evaluate`, `predict`, the evaluators, `dynamics` and `bench` all go through here.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rcae_jax import config as config_lib
from rcae_jax import model as model_lib
from rcae_jax import crossfit, ops, parallel

SEQUENCES = ('recon', 'enhanced')  # outputs laid out (N, B, ...); the rest are batch-first


def smoothing_sigma(config):
  """score.sigma is given in pixels at 256² (HFR's 4) and scales with the resolution."""
  return config.score.sigma * config.data.resolution / 256


def smooth(raw, config):
  """score.smoothing: 'gaussian' (score.sigma) or 'mean' (FAE: score.mean_repeats
  applications of a score.mean_size box filter, the size given at 256² and scaled)."""
  s = config.score
  if s.get('smoothing', 'gaussian') == 'mean':
    size = max(1, round(s.mean_size * config.data.resolution / 256)) | 1  # odd: centred
    return ops.mean_filter(raw, size, s.mean_repeats)
  return ops.gaussian_blur(raw, smoothing_sigma(config))


def image_score(smoothed_map, config):
  """score.image: 'max', 'topk' (mean of the score.topk largest) or 'sum' (FAE's default
  reduction; the mean, which ranks images the same)."""
  flat = smoothed_map.reshape(smoothed_map.shape[0], -1)
  if config.score.image == 'max':
    return flat.max(axis=1)
  if config.score.image == 'sum':
    return flat.mean(axis=1)
  return jax.lax.top_k(flat, min(config.score.topk, flat.shape[1]))[0].mean(axis=1)


def make_inference(config, with_sequences=False):
  """-> infer(params, images), images float (B, H, W, C) in [0, 1] or uint8.

  Returns {'map': (B, H, W) smoothed anomaly map, 'score': (B,)} and, with_sequences,
  'raw' (B, H, W) the map before smoothing (`rescore`), 'recon' (N, B, H, W, C) and
  'enhanced' (N, B, H, W, C) when the DPN is used; with_sequences='raw': only 'raw' (no
  sequences fetched to the host).
  """
  model = model_lib.from_config(config)
  source = config_lib.score_source(config)

  def infer(params, images):
    chex.assert_shape(images, (None,) + model.image_shape)
    x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images
    raw, out = crossfit.raw_map(model, params, x, source, with_sequences is True, config)
    smoothed = smooth(raw, config)
    if with_sequences:
      out['raw'] = jnp.squeeze(raw, -1)
    return {**out, 'map': jnp.squeeze(smoothed, -1), 'score': image_score(smoothed, config)}

  return infer


@functools.lru_cache(maxsize=16)
def _rescorer(config_json):
  config = config_lib.from_json(config_json)

  def fn(raw):
    smoothed = smooth(raw[..., None], config)
    return {'map': smoothed[..., 0], 'score': image_score(smoothed, config)}

  return jax.jit(fn)


def rescore(config, raw):
  """Smoothed maps and image scores under config.score from raw maps (B, H, W) (the
  'raw' output): other score choices without running the model again."""
  return jax.device_get(_rescorer(config_lib.to_json(config))(raw))


@functools.lru_cache(maxsize=16)
def _compiled(config_json, with_sequences, mesh):
  fn = make_inference(config_lib.from_json(config_json), with_sequences)
  return jax.jit(fn, in_shardings=(parallel.NamedSharding(mesh, parallel.P()),
                                   parallel.NamedSharding(mesh, parallel.P(parallel.AXIS))))


def compiled(config, mesh, with_sequences=False):
  """The jitted inference over `mesh` (cached per config, mode and mesh)."""
  return _compiled(config_lib.to_json(config), with_sequences, mesh)


def default_mesh():
  """Every device this process drives: evaluation is data-parallel like training."""
  return parallel.make_mesh(jax.local_devices())


def batches(config, params, images, with_sequences=False, batch_size=None, mesh=None):
  """Yields (indices, outputs) over `images` (uint8 (N, H, W, C), an array or a lazy view)
  batch by batch, outputs as numpy with the padding dropped: host memory holds one batch.

  The batch is config.eval_batch_size (or batch_size) rounded up to a multiple of the
  mesh's devices; results do not depend on it beyond float rounding.
  """
  if not len(images):
    raise ValueError('no images to run inference on')
  mesh = mesh or default_mesh()
  fn = compiled(config, mesh, with_sequences)
  n_dev = mesh.devices.size
  bs = -(-(batch_size or config.eval_batch_size) // n_dev) * n_dev
  params = parallel.replicate(params, mesh)
  pending = None

  def fetch(job):  # the host copy of a finished batch, its padding dropped
    out, idx = jax.device_get(job[0]), job[1]
    return idx, {k: np.take(v, np.arange(len(idx)), axis=_batch_axis(k)) for k, v in out.items()}

  for start in range(0, len(images), bs):
    idx = np.arange(start, min(len(images), start + bs))
    chunk = np.asarray(images[start:start + bs])
    if len(idx) < bs:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - len(idx), axis=0)])
    # placed explicitly: with several processes jit refuses sharded numpy inputs (this
    # mesh holds only this process's devices; each process evaluates on its own)
    chunk = jax.device_put(chunk, parallel.NamedSharding(mesh, parallel.P(parallel.AXIS)))
    job = (fn(params, chunk), idx)  # dispatched before the previous batch is fetched
    if pending:
      yield fetch(pending)
    pending = job
  yield fetch(pending)


def run(config, params, images, with_sequences=False, batch_size=None, mesh=None):
  """images uint8 (N, H, W, C) -> dict of numpy arrays over all images (see
  `make_inference`); `batches` streams them instead."""
  outs = [o for _, o in batches(config, params, images, with_sequences, batch_size, mesh)]
  return {k: np.concatenate([o[k] for o in outs], axis=_batch_axis(k)) for k in outs[0]}


def _batch_axis(key):
  return 1 if key in SEQUENCES else 0
