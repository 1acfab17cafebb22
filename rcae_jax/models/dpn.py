"""DPN: a 4-layer conv autoencoder predicting the detail R_n lost, D_n = R_n + DPN(R_n ⊕ ∇x)."""
import flax.linen as nn
import jax.numpy as jnp

from rcae_jax.models import layers


class DPN(nn.Module):
  out_channels: int
  features: int = 32
  groups: int = 0
  dtype: jnp.dtype = jnp.float32
  padding: str = 'SAME'

  @nn.compact
  def __call__(self, recon, grad_x):
    conv = lambda f, k, s: layers.ConvNormAct(f, k, s, self.groups, self.dtype, self.padding)
    h = jnp.concatenate([recon, grad_x], axis=-1).astype(self.dtype)
    h = conv(self.features, (3, 3), (1, 1))(h)
    h = conv(2 * self.features, (4, 4), (2, 2))(h)
    h = conv(self.features, (3, 3), (1, 1))(layers.upsample2x(h))
    residual = layers.conv(self.out_channels, padding=self.padding, dtype=self.dtype,
                           kernel_init=nn.initializers.zeros)(h)  # starts as the identity
    return recon + residual.astype(jnp.float32)


def from_config(config):
  return DPN(out_channels=config.data.channels, features=config.model.dpn_features,
             dtype=layers.dtype_of(config.model.dtype), padding=layers.padding_of(config))
