"""FAE, the Filtering Autoencoder: one U-Net trained in one stage (config group `fae`) to
restore pseudo-anomalous images, identity-anchored by noise on input and target; its map is
the smoothed discrepancy between the image and its restoration."""
import dataclasses

import chex
import jax
import numpy as np

from rcae_jax import anomalies, discrepancy, losses, methods, sizes
from rcae_jax.models import fae


@dataclasses.dataclass(frozen=True)
class Model:
  unet: fae.UNet
  image_shape: tuple
  grad_weight: float = 1.0
  discrepancy: str = 'ssim'
  _inits: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
  depth = 1

  def init(self, net, rng):
    assert net == 'fae', net
    if net not in self._inits:
      x = np.zeros((1,) + self.image_shape, np.float32)  # host: see rcae.Model.init
      self._inits[net] = jax.jit(lambda k: self.unet.init(k, x))
    return self._inits[net](rng)

  def reconstruct(self, params, x):
    return self.unet.apply(params, x)

  def raw_map(self, params, x, source='fae', with_sequences=False):
    """-> (discrepancy map (B, H, W, 1), {'recon': (1, B, H, W, C)} when asked)."""
    del source  # one network, one map
    chex.assert_shape(x, (None, None, None, self.image_shape[-1]))  # any size: tiles, crops
    recon = self.reconstruct(params['fae'], x)
    extra = {'recon': recon[None]} if with_sequences else {}
    return discrepancy.measure(self.discrepancy, x, recon, self.grad_weight), extra


def build(config):
  shape = sizes.image_size(config) + (config.data.channels,)
  return Model(fae.from_config(config), shape, config.grad_weight,
               config.score.get('discrepancy', 'ssim'))


def objective(model, config, variant=None, axis_name=None):
  """Restore the clean image from a pseudo-anomalous one (`anomaly.*`), noise on both."""
  del variant, axis_name

  def fn(params, frozen, batch, rng):
    x, target, mask = anomalies.restoration_pair(
        jax.random.fold_in(rng, 2), batch['image'], batch['index'], frozen.get('textures'),
        config, config.fae)
    return losses.restoration(config.fae, target, model.reconstruct(params, x), mask,
                              config.grad_weight), {}
  return fn


def validate(c, need):
  for key, size in sizes.network_sizes(c, ('fae',)):
    sizes.divisible(size, 2 ** (c.fae.levels - 1), f'{key}={size} (fae.levels={c.fae.levels}: '
                    f'{c.fae.levels - 1} halvings)', need)
  need(0 <= c.fae.noise <= 0.5,
       f'fae.noise={c.fae.noise} must be in [0, 0.5] (a std on [0, 1] images)')
  need(c.fae.region_weight >= 0, 'fae.region_weight must be >= 0')


STAGES = (methods.Stage(
    'fae', 'fae', objective, keys=('model.groups', 'model.padding', 'anomaly.'),
    anomalies=lambda c: 'anomaly' if c.fae.restore else None, source='fae',
    reconstructs=True),)

_STAGE_KEYS = ('epochs', 'steps', 'lr', 'restore', 'noise', 'region_weight', 'schedule', 'flip',
               'jitter')


def legacy(d):
  """Runs saved before FAE had its own group trained it with `stage1`'s settings; their
  config.json still holds the small-CRD era's keys, as RcAE's legacy gives them."""
  from rcae_jax.methods import rcae  # pylint: disable=g-import-not-at-top
  out = rcae.legacy(d)
  if 'steps' not in d.get('fae', {}):
    out['fae'] = {k: v for k, v in d.get('stage1', {}).items() if k in _STAGE_KEYS}
  return out


METHOD = methods.register(methods.Method('fae', STAGES, build, validate=validate,
                                         legacy=legacy))
