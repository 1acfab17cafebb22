"""The three networks as pure functions of (params, inputs), and the one inference function.

`make_inference(config)` is the only path from images to anomaly maps and scores:
`evaluate`, `predict`, `dynamics`, calibration and `bench` all call it.
"""
import dataclasses
import chex
import jax
import jax.numpy as jnp

from rcae_jax import config as config_lib
from rcae_jax import losses, ops
from rcae_jax.models import crd, dpn, rcae


@dataclasses.dataclass(frozen=True)
class Networks:
  rcae: rcae.RcAE
  dpn: dpn.DPN
  crd: crd.CRD
  depth: int
  recursion: str
  crd_steps: tuple  # 1-based


def networks(config):
  return Networks(rcae.from_config(config), dpn.from_config(config), crd.from_config(config),
                  config.model.depth, config.model.recursion, config_lib.crd_steps(config))


def init_params(nets, rng, image_shape):
  """{'rcae', 'dpn', 'crd'} parameter pytrees for images of shape (H, W, C)."""
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  k1, k2, k3 = jax.random.split(rng, 3)
  method = 'sequence' if nets.recursion == 'depth' else 'autoencode'
  seq = jnp.zeros((len(nets.crd_steps),) + x.shape, jnp.float32)
  return {
      'rcae': nets.rcae.init(k1, x, method=method),
      'dpn': nets.dpn.init(k2, x, ops.sobel(x)),
      'crd': nets.crd.init(k3, seq, x),
  }


def rcae_sequence(nets, params, x):
  """R_1 ... R_N: (N, B, H, W, C). Iterate mode scans the shared AE pass: R_n = AE(R_{n-1})."""
  if nets.recursion == 'depth':
    return nets.rcae.apply(params, x, method='sequence')
  step = lambda r, _: (nets.rcae.apply(params, r, method='autoencode'),) * 2
  _, seq = jax.lax.scan(step, x.astype(jnp.float32), None, length=nets.depth)
  return seq


def rcae_at_depth(nets, params, x, n):
  """R_n for a static depth n in 1..N (the stage-1 training path)."""
  if nets.recursion == 'iterate':
    step = lambda r, _: (nets.rcae.apply(params, r, method='autoencode'), None)
    return jax.lax.scan(step, x.astype(jnp.float32), None, length=n)[0]
  return nets.rcae.apply(params, x, n, method='reconstruct')


def enhance(nets, params, seq, x):
  """D_n = R_n + DPN(R_n ⊕ ∇x) for every n of seq (S, B, H, W, C)."""
  s, b = seq.shape[:2]
  flat = seq.reshape((s * b,) + seq.shape[2:])
  grad_x = jnp.tile(ops.sobel(x), (s, 1, 1, 1))
  return nets.dpn.apply(params, flat, grad_x).reshape(seq.shape)


def crd_map(nets, params, enhanced, x):
  """M_A (B, H, W, 1) from the configured CRD steps of the enhanced sequence."""
  idx = jnp.array([s - 1 for s in nets.crd_steps])
  return nets.crd.apply(params, enhanced[idx], x)


def smoothing_sigma(config):
  """score.sigma is given in pixels at 256² (HFR's 4) and scales with the resolution."""
  return config.score.sigma * config.data.resolution / 256


def image_score(smoothed_map, config):
  flat = smoothed_map.reshape(smoothed_map.shape[0], -1)
  if config.score.image == 'max':
    return flat.max(axis=1)
  return jax.lax.top_k(flat, min(config.score.topk, flat.shape[1]))[0].mean(axis=1)


def make_inference(config, with_sequences=False):
  """-> infer(params, images) with images float (B, H, W, C) in [0, 1] or uint8.

  Returns {'map': (B, H, W) smoothed anomaly map, 'score': (B,)} and, with_sequences,
  'recon' (N, B, H, W, C) and 'enhanced' (N, B, H, W, C) when the DPN is trained.
  """
  nets = networks(config)
  source = config_lib.score_source(config)
  res, ch = config.data.resolution, config.data.channels

  def infer(params, images):
    chex.assert_shape(images, (None, res, res, ch))
    x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images
    out = {}
    seq = rcae_sequence(nets, params['rcae'], x)
    if source == 'rcae':
      raw = losses.reconstruction_error_map(x, seq[-1], config.grad_weight)
    else:
      enh = enhance(nets, params['dpn'], seq, x)
      if with_sequences:
        out['enhanced'] = enh
      if source == 'dpn':
        raw = losses.reconstruction_error_map(x, enh[-1], config.grad_weight)
      else:
        raw = crd_map(nets, params['crd'], enh, x)
    smoothed = ops.gaussian_blur(raw, smoothing_sigma(config))
    out['map'] = smoothed[..., 0]
    out['score'] = image_score(smoothed, config)
    if with_sequences:
      out['recon'] = seq
    return out

  return infer
