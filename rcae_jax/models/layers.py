"""Building blocks shared by the three networks."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def reflect_pad(x, pads):
  """jnp.pad(x, pads, mode='reflect') from slices and flips: the same values, but its
  gradient is slices and adds, where XLA:CPU runs the padding's own transpose (a gather)
  ~3x slower than the convolution it feeds (measured: docs/design.md, padding)."""
  for axis, (lo, hi) in enumerate(pads):
    n = x.shape[axis]
    if max(lo, hi) >= n:  # reflected more than once (a dilated conv on a small map)
      x = jnp.pad(x, [(0, 0)] * axis + [(lo, hi)] + [(0, 0)] * (x.ndim - axis - 1),
                  mode='reflect')
    elif lo or hi:
      take = lambda a, b: jax.lax.slice_in_dim(x, a, b, axis=axis)
      x = jnp.concatenate([jnp.flip(take(1, lo + 1), axis), x,
                           jnp.flip(take(n - hi - 1, n - 1), axis)], axis=axis)
  return x


def conv(features, kernel=(3, 3), strides=(1, 1), padding='SAME', dilation=1,
         dtype=jnp.float32, **kwargs):
  """nn.Conv (created here, in the calling module's scope: same parameter names), with
  'REFLECT' padding done by `reflect_pad`: identical results to nn.Conv's own (tested).

  The reflect-padded input is convolved with one stride of zero padding more on each side
  and the extra output row/column on each side cropped: the same numbers as a 'VALID'
  convolution of it, bit for bit (forward and gradients), but XLA:CPU runs unpadded
  convolutions on a slow path: 3.2x slower forward, 2.3x backward for a 3x3 conv with 32
  input channels at 64² (docs/benchmarks.md, "Reflect padding")."""
  if padding != 'REFLECT':
    return nn.Conv(features, kernel, strides, padding=padding, kernel_dilation=dilation,
                   dtype=dtype, **kwargs)
  layer = nn.Conv(features, kernel, strides, padding=[(s, s) for s in strides],
                  kernel_dilation=dilation, dtype=dtype, **kwargs)
  dilated = [(k - 1) * dilation + 1 for k in kernel]
  pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in dilated] + [(0, 0)]

  def apply(x):
    y = layer(reflect_pad(x, pads))
    return y[:, 1:-1, 1:-1]
  return apply


class GroupNorm(nn.Module):
  """nn.GroupNorm's function and parameters ('scale', 'bias' per channel; epsilon 1e-6;
  statistics in float32 over every axis but the first and the channels of a group; tested
  equal), its statistics reduced per channel first and then per group. nn.GroupNorm reduces
  the reshaped (..., groups, channels / group) tensor in one go, which XLA:CPU runs with
  the group's few channels as its innermost, strided loop: 1.7-2.9x slower forward and
  backward at the shapes of `mtd.py:cpu` (docs/benchmarks.md, "GroupNorm")."""
  num_groups: int
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    if c % self.num_groups:
      raise ValueError(f'GroupNorm: {c} channels do not split into {self.num_groups} groups')
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    axes = tuple(range(1, x.ndim - 1))
    xf = x.astype(jnp.float32)
    per_group = lambda s: s.reshape(s.shape[0], self.num_groups, -1).sum(-1)
    n = math.prod(x.shape[1:-1]) * (c // self.num_groups)
    mean = per_group(xf.sum(axes)) / n
    var = jnp.maximum(per_group((xf * xf).sum(axes)) / n - mean * mean, 0.0)
    to_channels = lambda g: jnp.repeat(g, c // self.num_groups, axis=1).reshape(
        (x.shape[0],) + (1,) * len(axes) + (c,))
    mul = jax.lax.rsqrt(to_channels(var) + self.epsilon) * scale
    return ((xf - to_channels(mean)) * mul + bias).astype(self.dtype)


class ConvNormAct(nn.Module):
  """Conv -> GroupNorm (no batch statistics, see DESIGN.md) -> SiLU."""
  features: int
  kernel: tuple = (3, 3)
  strides: tuple = (1, 1)
  groups: int = 8
  dtype: jnp.dtype = jnp.float32
  padding: str = 'SAME'
  dilation: int = 1

  @nn.compact
  def __call__(self, x):
    x = conv(self.features, self.kernel, self.strides, self.padding, self.dilation,
             self.dtype)(x)
    if self.groups:
      x = GroupNorm(num_groups=self.groups, dtype=self.dtype)(x)
    return nn.silu(x)


def upsample2x(x, spatial_axes=(1, 2)):
  """Nearest-neighbour ×2 on the given axes (avoids transposed-conv checkerboards)."""
  for axis in spatial_axes:
    x = jnp.repeat(x, 2, axis=axis)
  return x


def dtype_of(name):
  return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[name]


PADDINGS = {'zeros': 'SAME', 'reflect': 'REFLECT'}


def padding_of(config):
  """Flax padding for model.padding. Reflect padding keeps image borders from looking
  like edges (zero padding made the CRD fire on corners); bundles written before the key
  existed were zero-padded."""
  return PADDINGS[config.model.get('padding', 'zeros')]


def count_params(params):
  return int(sum(x.size for x in jax.tree.leaves(params)))
