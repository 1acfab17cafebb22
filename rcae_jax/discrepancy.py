"""Per-pixel discrepancy between an image and its reconstruction: the anomaly map of every
reconstruction-scored detector (RcAE's "+RcAE"/"+DPN" rows, FAE).

  l1grad  channel-mean |x - r| + w * channel-mean |∇x - ∇r|  (DESIGN.md "Scores")
  mse     channel-mean (x - r)²
  ssim    1 - SSIM(x, r), the local SSIM map (11 x 11 Gaussian window, σ = 1.5)
  gms     1 - GMS(x, r), gradient-magnitude similarity (Xue et al. 2014, c = 0.0026)
Several joined by '+' (e.g. 'mse+gms') are summed. All (B, H, W, C) -> (B, H, W, 1).
"""
import dm_pix
import jax.numpy as jnp

from rcae_jax import ops

NAMES = ('l1grad', 'mse', 'ssim', 'gms')


def l1grad(x, recon, grad_weight=1.0):
  err = jnp.mean(jnp.abs(x - recon), axis=-1, keepdims=True)
  gerr = jnp.mean(jnp.abs(ops.sobel(x) - ops.sobel(recon)), axis=-1, keepdims=True)
  return err + grad_weight * gerr


def mse(x, recon):
  return jnp.mean(jnp.square(x - recon), axis=-1, keepdims=True)


def ssim(x, recon):
  same_size = lambda z: ops.gaussian_blur(z, 1.5)  # dm_pix's own filter crops the border
  s = dm_pix.ssim(x, recon, max_val=1.0, return_map=True, filter_fn=same_size)
  return 1.0 - jnp.mean(s, axis=-1, keepdims=True)


def gms(x, recon, c=0.0026):
  def magnitude(z):
    g = ops.sobel(z) / 4.0  # Sobel's weights sum to 4 per side: a unit step -> 1
    ch = z.shape[-1]
    return jnp.sqrt(jnp.square(g[..., :ch]) + jnp.square(g[..., ch:]) + 1e-12)
  mx, mr = magnitude(x), magnitude(recon)
  sim = (2 * mx * mr + c) / (jnp.square(mx) + jnp.square(mr) + c)
  return 1.0 - jnp.mean(sim, axis=-1, keepdims=True)


def measure(name, x, recon, grad_weight=1.0):
  """The discrepancy map `name` ('l1grad', 'mse', 'ssim', 'gms' or a '+' sum of them)."""
  parts = name.split('+')
  unknown = [p for p in parts if p not in NAMES]
  if unknown:
    raise ValueError(f'unknown discrepancy {unknown}; known: {NAMES}')
  fns = {'l1grad': lambda: l1grad(x, recon, grad_weight), 'mse': lambda: mse(x, recon),
         'ssim': lambda: ssim(x, recon), 'gms': lambda: gms(x, recon)}
  return sum(fns[p]() for p in parts)
