"""FAE's network: a U-Net with dilated convolutions in the bottleneck (FAE paper, §5: "a
modified U-Net with dilated convolutions in the bottleneck"; the paper gives no further
detail, our choices are in docs/design.md, "FAE").

Encoder: `levels` stages of two 3x3 ConvNormAct, each but the last followed by a stride-2
4x4 ConvNormAct; features double per level up to 8x. Bottleneck: one 3x3 ConvNormAct per
dilation rate, added residually, so the receptive field covers the image at training
resolution. Decoder: nearest x2 upsampling, concatenation with the encoder features of that
level, two 3x3 ConvNormAct. Head: 3x3 conv -> sigmoid (images in [0, 1]).
"""
import flax.linen as nn
import jax.numpy as jnp

from rcae_jax.models import layers


class UNet(nn.Module):
  out_channels: int
  features: int = 32
  levels: int = 4
  dilations: tuple = (1, 2, 4, 8)
  groups: int = 8
  dtype: jnp.dtype = jnp.float32
  padding: str = 'SAME'

  @nn.compact
  def __call__(self, x):
    conv = lambda f, k=(3, 3), s=(1, 1): layers.ConvNormAct(f, k, s, self.groups, self.dtype,
                                                            self.padding)
    width = lambda level: self.features * min(2 ** level, 8)
    h = x.astype(self.dtype)
    skips = []
    for level in range(self.levels):
      h = conv(width(level))(conv(width(level))(h))
      if level < self.levels - 1:
        skips.append(h)
        h = conv(width(level + 1), (4, 4), (2, 2))(h)
    for rate in self.dilations:
      h = h + layers.ConvNormAct(width(self.levels - 1), (3, 3), (1, 1), self.groups,
                                 self.dtype, self.padding, dilation=rate)(h)
    for level in range(self.levels - 2, -1, -1):
      h = jnp.concatenate([layers.upsample2x(h), skips[level]], axis=-1)
      h = conv(width(level))(conv(width(level))(h))
    out = layers.conv(self.out_channels, padding=self.padding, dtype=self.dtype)(h)
    return nn.sigmoid(out.astype(jnp.float32))


def from_config(config):
  f = config.fae
  return UNet(out_channels=config.data.channels, features=f.features, levels=f.levels,
              dilations=tuple(f.dilations), groups=config.model.groups,
              dtype=layers.dtype_of(config.model.dtype), padding=layers.padding_of(config))
