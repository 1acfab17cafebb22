"""CRD: a 4-layer 3-D conv autoencoder over (step, h, w) of the stack D_n ⊕ x -> anomaly map."""
import flax.linen as nn
import jax.numpy as jnp

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

  @nn.compact
  def __call__(self, h):  # (B, S, H, W, C)
    b, s = h.shape[:2]
    pad = jnp.pad(h, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
    stacked = jnp.concatenate([pad[:, t:t + s] for t in range(3)], axis=-1)
    flat = stacked.reshape((b * s,) + stacked.shape[2:])
    out = nn.Conv(self.features, (3, 3), (self.strides,) * 2, padding=self.padding,
                  dtype=self.dtype)(flat)
    return out.reshape((b, s) + out.shape[1:])


class CRD(nn.Module):
  features: int = 16
  dtype: jnp.dtype = jnp.float32
  padding: str = 'SAME'
  diff: bool = False  # also feed |D_n - x|: a small CRD need not learn the subtraction

  @nn.compact
  def __call__(self, enhanced, x):
    """enhanced: (S, B, H, W, C) selected D_n; x: (B, H, W, C) -> map (B, H, W, 1) in [0, 1]."""
    x = jnp.broadcast_to(x, enhanced.shape)
    h = jnp.concatenate([enhanced, x] + ([jnp.abs(enhanced - x)] if self.diff else []), axis=-1)
    h = jnp.moveaxis(h, 0, 1).astype(self.dtype)  # (B, S, H, W, 2C)
    f = self.features
    conv = lambda feat, s=1: StepConv(feat, s, self.dtype, self.padding)
    h = nn.silu(conv(f)(h))  # full resolution: thin scratches survive
    h = nn.silu(conv(2 * f, 2)(h))
    h = nn.silu(conv(f)(layers.upsample2x(h, (2, 3))))
    logits = conv(1)(h)
    return nn.sigmoid(jnp.mean(logits.astype(jnp.float32), axis=1))  # pool over steps


def from_config(config):
  return CRD(features=config.model.crd_features, dtype=layers.dtype_of(config.model.dtype),
             padding=layers.padding_of(config), diff=config.model.get('crd_diff', False))
