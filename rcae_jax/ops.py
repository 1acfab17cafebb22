"""Image operators used by the losses and the scores (NHWC, float)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np


def _depthwise(x, kernel, pad_mode):
  """Correlates every channel of x (B, H, W, C) with a 2-D kernel, padding by `pad_mode`."""
  kh, kw = kernel.shape
  c = x.shape[-1]
  pads = ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0))
  x = _edge_pad(x, pads) if pad_mode == 'edge' else jnp.pad(x, pads, mode=pad_mode)
  del c
  # a sum of shifted slices, not a depthwise convolution: XLA fuses it into one loop, where
  # XLA:CPU's depthwise convolution of these few channels ran ~50x slower (a 3x3 Sobel of
  # 48 64² images: 26 ms, docs/benchmarks.md "Reflect padding")
  h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      if kernel[i, j] == 0:
        continue
      term = float(kernel[i, j]) * jax.lax.slice(x, (0, i, j, 0), (x.shape[0], i + h, j + w,
                                                                     x.shape[3]))
      out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _edge_pad(x, pads):
  """jnp.pad(x, pads, mode='edge') from slices: the same values, and an ONNX converter
  (jax2onnx 0.17) mis-shapes jnp.pad's edge mode. Its gradient is jnp.pad's own, so training
  sums the same terms in the same order as before."""
  for axis, (lo, hi) in enumerate(pads):
    n = x.shape[axis]
    first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
    last = jax.lax.slice_in_dim(x, n - 1, n, axis=axis)
    if lo or hi:
      x = jnp.concatenate([first] * lo + [x] + [last] * hi, axis=axis)
  return x


def _edge_pad_fwd(x, pads):
  return _edge_pad(x, pads), x


def _edge_pad_bwd(pads, x, g):
  return jax.vjp(lambda y: jnp.pad(y, pads, mode='edge'), x)[1](g)


_edge_pad.defvjp(_edge_pad_fwd, _edge_pad_bwd)


_SOBEL_Y = np.outer([-1., 0., 1.], [1., 2., 1.])  # d/dy, smoothed along x


def sobel(x):
  """First-order image gradient: (B, H, W, C) -> (B, H, W, 2C) = [d/dy | d/dx].

  Equals scipy.ndimage.sobel(x[b, :, :, c], axis, mode='nearest') per 2-D channel.
  """
  dy = _depthwise(x, _SOBEL_Y, 'edge')
  dx = _depthwise(x, _SOBEL_Y.T, 'edge')
  return jnp.concatenate([dy, dx], axis=-1)


@functools.lru_cache(maxsize=None)
def gaussian_kernel1d(sigma, truncate=4.0):
  radius = int(truncate * sigma + 0.5)
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  return (k / k.sum()).astype(np.float32)


def gaussian_blur(x, sigma):
  """Separable Gaussian of x (B, H, W, C); equals scipy.ndimage.gaussian_filter (mode='reflect')."""
  if sigma <= 0:
    return x
  k = gaussian_kernel1d(float(sigma))
  x = _depthwise(x, k[:, None], 'symmetric')
  return _depthwise(x, k[None, :], 'symmetric')


def mean_filter(x, size, repeats=1):
  """`repeats` applications of a size x size box mean to x (B, H, W, C), borders reflected;
  FAE's smoothing of discrepancy maps. Equals scipy.ndimage.uniform_filter (mode='mirror'
  for odd sizes) applied `repeats` times."""
  if size <= 1 or repeats <= 0:
    return x
  k = np.full((size,), 1.0 / size, np.float32)
  for _ in range(repeats):
    x = _depthwise(_depthwise(x, k[:, None], 'reflect'), k[None, :], 'reflect')
  return x
