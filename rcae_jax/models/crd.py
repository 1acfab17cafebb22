"""CRD: a 3-D conv net over (step, h, w) of the stack D_n ⊕ x (⊕ |D_n - x|) -> anomaly logits.

Two designs (`model.crd_arch`):
- 'small': the paper's 4-layer encoder-decoder (one halving); it sees ~11 px around a pixel,
  too little to tell a tile edge from a break or to judge a large uneven area.
- 'unet': a 3x3x3 convolution over (step, h, w) at full resolution, then the steps stacked
  on the channel axis (every step's features reach every later layer) and a 2-D U-Net with
  GroupNorm halving `crd_levels` times, two dilated convolutions at the bottom: a pixel's
  logit sees the whole image at the training resolution (`receptive_field`, tested).
  Keeping the step axis at every level cost S x the work for no gain we could measure
  (docs/design.md, Detector).
Both return logits (B, H, W, 1) (the small one averages its per-step logits over the
steps); `Model.crd_map` applies the sigmoid.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from rcae_jax import sizes
from rcae_jax.models import layers


class StepConv(nn.Module):
  """A 3x3x3 convolution over (step, h, w), 'SAME' padded, as one 2-D convolution.

  The three step-neighbours are stacked on the channel axis, so
  kernel[h, w, t * C_in + c, f] == conv3d_kernel[t, h, w, c, f]. Same parameters and
  result as nn.Conv with a (3, 3, 3) kernel (tests/test_models.py), but XLA's CPU backend
  runs 2-D convolutions ~10x faster than 3-D ones.
  """
  features: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32
  padding: str = 'SAME'  # of (h, w); the step axis is always zero-padded
  dilation: int = 1

  @nn.compact
  def __call__(self, h):  # (B, S, H, W, C)
    b, s = h.shape[:2]
    pad = jnp.pad(h, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
    # lax slices: jnp's indexing becomes a gather under a symbolic batch (export, ONNX)
    stacked = jnp.concatenate([jax.lax.slice_in_dim(pad, t, t + s, axis=1) for t in range(3)],
                              axis=-1)
    flat = stacked.reshape((b * s,) + stacked.shape[2:])
    out = layers.conv(self.features, (3, 3), (self.strides,) * 2, self.padding, self.dilation,
                      self.dtype)(flat)
    return out.reshape((b, s) + out.shape[1:])


def auto_levels(resolution):
  """Halvings of the 'unet' CRD: down to an 8-px bottleneck (3 at 64², 4 at 128²)."""
  return max(1, int(math.log2(resolution // 8)))


def receptive_field(levels):
  """Side (pixels) of the window one 'unet' logit sees: the full-resolution 3x3, per level
  a strided 3x3 and a 3x3, dilations 2 and 4 at the bottom, one 3x3 per level up."""
  rf, jump = 3, 1
  for _ in range(levels):
    rf, jump = rf + 2 * jump, jump * 2      # strided conv
    rf += 2 * jump                          # conv
  rf += 2 * jump * 2 + 2 * jump * 4         # the dilated bottleneck
  for _ in range(levels):
    jump //= 2
    rf += 2 * jump                          # conv after each upsampling
  return rf


class CRD(nn.Module):
  features: int = 16
  dtype: jnp.dtype = jnp.float32
  padding: str = 'SAME'
  diff: bool = False  # also feed |D_n - x|: a small CRD need not learn the subtraction
  image: bool = True  # feed x itself (False: only D_n and |D_n - x|, no image identity)
  arch: str = 'small'
  levels: int = 3  # 'unet' halvings

  @nn.compact
  def __call__(self, enhanced, x):
    """enhanced: (S, B, H, W, C) selected D_n; x: (B, H, W, C) -> logits (B, H, W, 1)."""
    x = jnp.broadcast_to(x, enhanced.shape)
    h = jnp.concatenate([enhanced] + ([x] if self.image else []) +
                        ([jnp.abs(enhanced - x)] if self.diff else []), axis=-1)
    h = jnp.moveaxis(h, 0, 1).astype(self.dtype)  # (B, S, H, W, 2C or 3C)
    f = self.features
    conv = lambda feat, s=1, d=1: StepConv(feat, s, self.dtype, self.padding, d)
    if self.arch == 'small':
      h = nn.silu(conv(f)(h))  # full resolution: thin scratches survive
      h = nn.silu(conv(2 * f, 2)(h))
      h = nn.silu(conv(f)(layers.upsample2x(h, (2, 3))))
      return jnp.mean(conv(1)(h).astype(jnp.float32), axis=1)  # pool over steps
    h = nn.silu(conv(f)(h))  # (B, S, H, W, f): across steps, full resolution
    b, s, hh, ww, _ = h.shape
    h = jnp.moveaxis(h, 1, -2).reshape((b, hh, ww, s * f))  # steps stacked on channels
    width = lambda level: f * min(2 ** level, 4)
    block = lambda feat, stride=1, d=1: layers.ConvNormAct(
        feat, (3, 3), (stride, stride), math.gcd(4, feat), self.dtype, self.padding, d)
    skips = [h]
    for level in range(1, self.levels + 1):
      h = block(width(level), 2)(h)
      h = block(width(level))(h)
      skips.append(h)
    h = block(width(self.levels), d=2)(h)
    h = block(width(self.levels), d=4)(h)
    for level in reversed(range(self.levels)):
      h = jnp.concatenate([layers.upsample2x(h), skips[level]], axis=-1)
      h = block(width(level))(h)
    return layers.conv(1, padding=self.padding, dtype=self.dtype)(h).astype(jnp.float32)


def from_config(config):
  m = config.model
  arch = m.get('crd_arch', 'small')
  # auto: from the shorter side the CRD trains on (its crops, or the images)
  levels = m.get('crd_levels', 0) or auto_levels(min(sizes.train_size(config, 'stage3')))
  padding = m.get('crd_padding', '') or m.get('padding', 'zeros')
  return CRD(features=m.crd_features, dtype=layers.dtype_of(m.dtype),
             padding=layers.PADDINGS[padding], diff=m.get('crd_diff', False),
             image=m.get('crd_image', True), arch=arch, levels=levels)
