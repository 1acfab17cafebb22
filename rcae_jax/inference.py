"""Batched, jitted application of `pipeline.make_inference` to host arrays.

Fixed-size batches (the last one padded) so a whole test set compiles once.
"""
import functools

import jax
import numpy as np

from rcae_jax import config as config_lib
from rcae_jax import pipeline


@functools.lru_cache(maxsize=8)
def _compiled(config_json, with_sequences):
  config = config_lib.from_json(config_json)
  return jax.jit(pipeline.make_inference(config, with_sequences))


def infer_fn(config, with_sequences=False):
  return _compiled(config_lib.to_json(config), with_sequences)


def run(config, params, images, with_sequences=False, batch_size=None):
  """images uint8 (N, H, W, C) -> dict of numpy arrays."""
  if not len(images):
    raise ValueError('no images to run inference on')
  fn = infer_fn(config, with_sequences)
  bs = batch_size or config.eval_batch_size
  outs = []
  for start in range(0, len(images), bs):
    chunk = images[start:start + bs]
    n = len(chunk)
    if n < bs:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - n, axis=0)])
    out = jax.device_get(fn(params, chunk))
    outs.append({k: np.take(v, np.arange(n), axis=_batch_axis(k)) for k, v in out.items()})
  return {k: np.concatenate([o[k] for o in outs], axis=_batch_axis(k)) for k in outs[0]}


def _batch_axis(key):
  """'map'/'score' are batch-first; sequences are (N, B, ...)."""
  return 1 if key in ('recon', 'enhanced') else 0
