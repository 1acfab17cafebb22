"""Building blocks shared by the three networks."""
import flax.linen as nn
import jax
import jax.numpy as jnp


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
    x = nn.Conv(self.features, self.kernel, self.strides, padding=self.padding,
                kernel_dilation=self.dilation, dtype=self.dtype)(x)
    if self.groups:
      x = nn.GroupNorm(num_groups=self.groups, dtype=self.dtype)(x)
    return nn.silu(x)


def upsample2x(x, spatial_axes=(1, 2)):
  """Nearest-neighbour ×2 on the given axes (avoids transposed-conv checkerboards)."""
  for axis in spatial_axes:
    x = jnp.repeat(x, 2, axis=axis)
  return x


def dtype_of(name):
  return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[name]


def padding_of(config):
  """Flax padding for model.padding. Reflect padding keeps image borders from looking
  like edges (zero padding made the CRD fire on corners); bundles written before the key
  existed were zero-padded."""
  return {'zeros': 'SAME', 'reflect': 'REFLECT'}[config.model.get('padding', 'zeros')]


def count_params(params):
  return int(sum(x.size for x in jax.tree.leaves(params)))
