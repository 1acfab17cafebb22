"""The models of the platform's methods: networks, parameters, and the forward pass from an
image to a raw anomaly map, as pure functions of (params, inputs).

`Model` is RcAE (three networks; the recursion itself, both modes, is in
`rcae_jax.models.rcae`); `FAEModel` is FAE (one U-Net, `rcae_jax.models.fae`). Both offer
what training and inference read: `stage_nets` (the network each stage trains),
`init`/`init_all`/`init_for_stage`, and `raw_map`. `from_config` picks by `config.method`.
Training (`losses.stage_objective`) and inference (`rcae_jax.inference`) call nothing else.
"""
import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp

from rcae_jax import config as config_lib
from rcae_jax import discrepancy, ops
from rcae_jax.models import crd, dpn, fae, rcae

STAGE_NET = {1: 'rcae', 2: 'dpn', 3: 'crd'}  # the network each RcAE training stage trains


def _stage_key(seed, stage, index):
  """The key of a stage's network: split 3 ways from fold_in(PRNGKey(seed), stage)."""
  return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), stage), 3)[index]


@dataclasses.dataclass(frozen=True)
class Model:
  rcae: rcae.RcAE
  dpn: dpn.DPN
  crd: crd.CRD
  crd_steps: tuple  # 1-based depths the CRD reads
  image_shape: tuple  # (H, W, C)
  grad_weight: float = 1.0
  discrepancy: str = 'l1grad'
  _inits: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
  stage_nets = STAGE_NET

  @property
  def depth(self):
    return self.rcae.depth

  def init(self, net, rng):
    """Initial params of one network ('rcae' | 'dpn' | 'crd'), jitted: only that network's
    initialiser runs, compiled once per model."""
    if net not in self._inits:
      x = jnp.zeros((1,) + self.image_shape, jnp.float32)
      seq = jnp.zeros((len(self.crd_steps),) + x.shape, jnp.float32)
      method = 'sequence' if self.rcae.recursion == 'depth' else 'autoencode'
      self._inits[net] = jax.jit({
          'rcae': lambda k: self.rcae.init(k, x, method=method),
          'dpn': lambda k: self.dpn.init(k, x, ops.sobel(x)),
          'crd': lambda k: self.crd.init(k, seq, x),
      }[net])
    return self._inits[net](rng)

  def init_all(self, rng):
    """{'rcae', 'dpn', 'crd'}: one key each, split from rng in that order."""
    keys = jax.random.split(rng, 3)
    return {net: self.init(net, k) for net, k in zip(('rcae', 'dpn', 'crd'), keys)}

  def init_for_stage(self, stage, seed):
    """Stage s's network from (seed, s): the key `init_all(fold_in(PRNGKey(seed), s))` gives it."""
    return self.init(STAGE_NET[stage], _stage_key(seed, stage, stage - 1))

  def sequence(self, params, x):
    """R_1 ... R_N: (N, B, H, W, C) from the RcAE's params."""
    return rcae.sequence(self.rcae, params, x)

  def at_depth(self, params, x, n):
    """R_n for a static n in 1..N."""
    return rcae.at_depth(self.rcae, params, x, n)

  def enhance(self, params, seq, x):
    """D_n = R_n + DPN(R_n ⊕ ∇x) for every n of seq (S, B, H, W, C), from the DPN's params."""
    s, b = seq.shape[:2]
    flat = seq.reshape((s * b,) + seq.shape[2:])
    grad_x = jnp.tile(ops.sobel(x), (s, 1, 1, 1))
    return self.dpn.apply(params, flat, grad_x).reshape(seq.shape)

  def crd_logits(self, params, enhanced, x):
    """Logits of M_A (B, H, W, 1) from the configured CRD steps of the enhanced sequence."""
    idx = jnp.array([s - 1 for s in self.crd_steps])
    return self.crd.apply(params, enhanced[idx], x)

  def crd_map(self, params, enhanced, x):
    """M_A (B, H, W, 1) in [0, 1]."""
    return jax.nn.sigmoid(self.crd_logits(params, enhanced, x))

  def raw_map(self, params, x, source, with_sequences=False):
    """-> (unsmoothed anomaly map (B, H, W, 1), {'recon', 'enhanced'} when asked).

    source: 'crd' (M_A), 'dpn' (discrepancy of D_N) or 'rcae' (of R_N), DESIGN.md "Scores".
    """
    chex.assert_shape(x, (None,) + self.image_shape)
    seq = self.sequence(params['rcae'], x)
    extra = {'recon': seq} if with_sequences else {}
    if source == 'rcae':
      return discrepancy.measure(self.discrepancy, x, seq[-1], self.grad_weight), extra
    enh = self.enhance(params['dpn'], seq, x)
    if with_sequences:
      extra['enhanced'] = enh
    if source == 'dpn':
      return discrepancy.measure(self.discrepancy, x, enh[-1], self.grad_weight), extra
    return self.crd_map(params['crd'], enh, x), extra


@dataclasses.dataclass(frozen=True)
class FAEModel:
  """FAE: one U-Net trained in one stage to restore corrupted images (identity-anchored by
  noise on input and target); its map is the discrepancy between x and its restoration."""
  unet: fae.UNet
  image_shape: tuple
  grad_weight: float = 1.0
  discrepancy: str = 'ssim'
  _inits: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
  stage_nets = {1: 'fae'}
  depth = 1

  def init(self, net, rng):
    assert net == 'fae', net
    if net not in self._inits:
      x = jnp.zeros((1,) + self.image_shape, jnp.float32)
      self._inits[net] = jax.jit(lambda k: self.unet.init(k, x))
    return self._inits[net](rng)

  def init_all(self, rng):
    return {'fae': self.init('fae', jax.random.split(rng, 3)[0])}

  def init_for_stage(self, stage, seed):
    return self.init('fae', _stage_key(seed, stage, 0))

  def reconstruct(self, params, x):
    return self.unet.apply(params, x)

  def raw_map(self, params, x, source='fae', with_sequences=False):
    """-> (discrepancy map (B, H, W, 1), {'recon': (1, B, H, W, C)} when asked)."""
    del source  # one network, one map
    chex.assert_shape(x, (None,) + self.image_shape)
    recon = self.reconstruct(params['fae'], x)
    extra = {'recon': recon[None]} if with_sequences else {}
    return discrepancy.measure(self.discrepancy, x, recon, self.grad_weight), extra


@functools.lru_cache(maxsize=32)
def _from_json(config_json):
  config = config_lib.from_json(config_json)
  shape = (config.data.resolution,) * 2 + (config.data.channels,)
  score = config.score
  if config_lib.method(config) == 'fae':
    return FAEModel(fae.from_config(config), shape, config.grad_weight,
                    score.get('discrepancy', 'ssim'))
  return Model(rcae.from_config(config), dpn.from_config(config), crd.from_config(config),
               config_lib.crd_steps(config), shape, config.grad_weight,
               score.get('discrepancy', 'l1grad'))


def from_config(config):
  """The model of a config (cached: the same config gives the same object and programs)."""
  return _from_json(config_lib.to_json(config))
