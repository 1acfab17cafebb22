"""DPN: a 4-layer conv autoencoder predicting the detail R_n lost, D_n = R_n + DPN(R_n ⊕ ∇x)."""
import flax.linen as nn
import jax.numpy as jnp

from rcae_jax.models import layers


class DPN(nn.Module):
  out_channels: int
  features: int = 32
  groups: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, recon, grad_x):
    h = jnp.concatenate([recon, grad_x], axis=-1).astype(self.dtype)
    h = layers.ConvNormAct(self.features, (3, 3), (1, 1), self.groups, self.dtype)(h)
    h = layers.ConvNormAct(2 * self.features, (4, 4), (2, 2), self.groups, self.dtype)(h)
    h = layers.ConvNormAct(self.features, (3, 3), (1, 1), self.groups, self.dtype)(
        layers.upsample2x(h))
    residual = nn.Conv(self.out_channels, (3, 3), padding='SAME', dtype=self.dtype,
                       kernel_init=nn.initializers.zeros)(h)  # starts as the identity
    return recon + residual.astype(jnp.float32)


def from_config(config):
  return DPN(out_channels=config.data.channels, features=config.model.dpn_features,
             dtype=layers.dtype_of(config.model.dtype))
