"""RcAE (AAAI 2026): the recursive autoencoder, the DPN and the CRD, trained in three stages.

Stage 1 trains the RcAE at a depth n drawn per step (one program per n); stage 2 the DPN
with the RcAE frozen; stage 3 the CRD on pseudo-anomalies with both frozen. `config.stages`
(1,) = +RcAE, (1, 2) = +DPN, (1, 2, 3) = the full pipeline; the map of each is the
discrepancy of R_N, of D_N, or the CRD's M_A (DESIGN.md, "Scores").
"""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rcae_jax import anomalies, augment, discrepancy, losses, methods, ops, sizes
from rcae_jax.models import crd, dpn, rcae


@dataclasses.dataclass(frozen=True)
class Model:
  """The three networks and the forward pass from an image to a raw anomaly map."""
  rcae: rcae.RcAE
  dpn: dpn.DPN
  crd: crd.CRD
  crd_steps: tuple  # 1-based depths the CRD reads
  image_shape: tuple  # (H, W, C)
  grad_weight: float = 1.0
  discrepancy: str = 'l1grad'
  _inits: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

  @property
  def depth(self):
    return self.rcae.depth

  def init(self, net, rng):
    """Initial params of one network ('rcae' | 'dpn' | 'crd'), jitted: only that network's
    initialiser runs, compiled once per model."""
    if net not in self._inits:
      # host constants: created under a trace (jax.eval_shape of a stage's state) jnp arrays
      # would be that trace's tracers, kept in the cached closure
      x = np.zeros((1,) + self.image_shape, np.float32)
      seq = np.zeros((len(self.crd_steps),) + x.shape, np.float32)
      init_method = rcae.RECURSIONS[self.rcae.recursion].init_method
      self._inits[net] = jax.jit({
          'rcae': lambda k: self.rcae.init(k, x, method=init_method),
          'dpn': lambda k: self.dpn.init(k, x, ops.sobel(x)),
          'crd': lambda k: self.crd.init(k, seq, x),
      }[net])
    return self._inits[net](rng)

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
    # static slices: jnp's indexing becomes a gather under a symbolic batch (export, ONNX)
    steps = jnp.stack([jax.lax.index_in_dim(enhanced, s - 1, keepdims=False)
                       for s in self.crd_steps])
    return self.crd.apply(params, steps, x)

  def crd_map(self, params, enhanced, x):
    """M_A (B, H, W, 1) in [0, 1]."""
    return jax.nn.sigmoid(self.crd_logits(params, enhanced, x))

  def raw_map(self, params, x, source, with_sequences=False):
    """-> (unsmoothed anomaly map (B, H, W, 1), {'recon', 'enhanced'} when asked).

    source: 'crd' (M_A), 'dpn' (discrepancy of D_N) or 'rcae' (of R_N), DESIGN.md "Scores".
    """
    chex.assert_shape(x, (None, None, None, self.image_shape[-1]))  # any size: tiles, crops
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


def crd_steps(c):
  return tuple(c.model.crd_steps) or tuple(range(1, c.model.depth + 1))


def build(config):
  # the shape parameters are initialised at: every network is fully convolutional and runs
  # at any size its recursion can halve (crops in training, whole images or tiles after)
  shape = sizes.image_size(config) + (config.data.channels,)
  return Model(rcae.from_config(config), dpn.from_config(config), crd.from_config(config),
               crd_steps(config), shape, config.grad_weight,
               config.score.get('discrepancy', 'l1grad'))


def _pair(config, stage_config, frozen, batch, rng):
  return anomalies.restoration_pair(jax.random.fold_in(rng, 2), batch['image'], batch['index'],
                                    frozen.get('textures'), config, stage_config)


def rcae_objective(model, config, n, axis_name=None):
  """Stage 1: R_n at the static depth n restores the clean image."""
  del axis_name
  if n is None:
    raise ValueError('the stage-1 objective needs its recursion depth n')

  def objective(params, frozen, batch, rng):
    x, target, mask = _pair(config, config.stage1, frozen, batch, rng)
    return losses.restoration(config.stage1, target, model.at_depth(params, x, n), mask,
                              config.grad_weight), {}
  return objective


def dpn_objective(model, config, variant=None, axis_name=None):
  """Stage 2: every D_n against the same clean target, the RcAE frozen."""
  del variant, axis_name

  def objective(params, frozen, batch, rng):
    x, target, mask = _pair(config, config.stage2, frozen, batch, rng)
    seq = jax.lax.stop_gradient(model.sequence(frozen['rcae'], x))
    enh = model.enhance(params, seq, x)
    tile = lambda a: jnp.broadcast_to(a, (enh.shape[0],) + a.shape).reshape(
        (-1,) + a.shape[1:])
    return losses.restoration(config.stage2, tile(target), enh.reshape((-1,) + x.shape[1:]),
                              tile(mask), config.grad_weight), {}
  return objective


def crd_objective(model, config, variant=None, axis_name=None):
  """Stage 3: the CRD's map of a pseudo-anomalous image against its mask, RcAE and DPN
  frozen."""
  del variant

  def objective(params, frozen, batch, rng):
    corrupted, mask = anomalies.synthesize_batch(
        jax.random.fold_in(rng, 1), batch['image'], batch['index'], frozen['textures'], config,
        'crd_anomaly')
    seq = model.sequence(frozen['rcae'], corrupted)
    enh = jax.lax.stop_gradient(model.enhance(frozen['dpn'], seq, corrupted))
    enh = augment.recon_noise(jax.random.fold_in(rng, 6), enh, batch['index'],
                              config.stage3.get('recon_noise', 0.0))
    return losses.crd_loss(mask, model.crd_logits(params, enh, corrupted), config,
                           axis_name), {}
  return objective


def depth_of_step(config, step):
  """The recursion depth n of a stage-1 step: U{1..N} (or N), a function of (seed, step)
  alone, so every device and host draws the same n and a resumed run draws the same
  sequence."""
  if config.depth_sampling == 'max':
    return config.model.depth
  return int(np.random.default_rng((config.data.seed, 1, step)).integers(1, config.model.depth + 1))


def _restoring(group):
  return lambda config: 'anomaly' if config[group].get('restore', False) else None


_RCAE_KEYS = ('model.features', 'model.depth', 'model.recursion', 'model.iterate_levels',
              'model.shared', 'model.skips', 'model.skip_from', 'model.groups',
              'model.padding', 'model.remat', 'depth_sampling')

STAGES = (
    methods.Stage('rcae', 'stage1', rcae_objective, keys=_RCAE_KEYS + ('anomaly.',),
                  anomalies=_restoring('stage1'), variant=depth_of_step,
                  variants=lambda c: (c.model.depth,) if c.depth_sampling == 'max'
                  else tuple(range(1, c.model.depth + 1)),
                  source='rcae', reconstructs=True),
    methods.Stage('dpn', 'stage2', dpn_objective, reads=('rcae',),
                  keys=('model.dpn_', 'model.padding', 'anomaly.'),
                  anomalies=_restoring('stage2'), source='dpn', reconstructs=True),
    methods.Stage('crd', 'stage3', crd_objective, reads=('rcae', 'dpn'),
                  keys=('model.crd_', 'model.padding', 'crd_anomaly.'),
                  anomalies=lambda config: 'crd_anomaly', source='crd'),
)


def validate(c, need):
  """RcAE's own rules: sizes its recursion can halve, steps the CRD can read, the restoring
  stages' noise and loss weight, the CRD's levels and loss weight."""
  need(c.model.depth >= 1, f'model.depth={c.model.depth} must be >= 1')
  need(c.model.features >= 1, 'model.features must be >= 1')
  levels = rcae.RECURSIONS[c.model.recursion].levels(c.model)
  why = f'{c.model.recursion} mode halves it {levels} times; the DPN/CRD twice'
  for key, size in sizes.network_sizes(c, ('stage1', 'stage2', 'stage3')):
    sizes.divisible(size, 2 ** max(levels, 2), f'{key}={size} ({why})', need)
  need(c.model.groups == 0 or c.model.features % c.model.groups == 0,
       f'model.groups={c.model.groups} must divide model.features={c.model.features}')
  bad = [s for s in c.model.crd_steps if not 1 <= s <= c.model.depth]
  need(not bad, f'model.crd_steps has steps {bad} outside 1..model.depth={c.model.depth}')
  need(c.model.get('crd_image', True) or c.model.crd_diff,
       'model.crd_image=False needs model.crd_diff=True: the CRD would not see the input')
  for group in ('stage1', 'stage2'):
    st = c[group]
    need(0 <= st.get('noise', 0.0) <= 0.5,
         f'{group}.noise={st.get("noise")} must be in [0, 0.5] (a std on [0, 1] images)')
    need(st.get('region_weight', 0.0) >= 0, f'{group}.region_weight must be >= 0')
  need(c.model.get('skip_from', 1) >= 1,
       f'model.skip_from={c.model.get("skip_from")} must be >= 1 (1 = skips at every level)')
  levels = c.model.crd_levels
  need(levels >= 0, f'model.crd_levels={levels} must be >= 0')
  if c.model.crd_arch == 'unet' and not levels:
    levels = crd.auto_levels(min(sizes.train_size(c, 'stage3')))
  for key, size in sizes.network_sizes(c, ('stage1', 'stage2', 'stage3')):
    sizes.divisible(size, 2 ** levels, f'{key}={size} (model.crd_levels={levels} halvings)',
                    need)
  need(0 <= c.stage3.get('recon_noise', 0.0) <= 0.5,
       f'stage3.recon_noise={c.stage3.get("recon_noise")} must be in [0, 0.5] (a std on [0, 1] '
       'images)')
  need(c.model.crd_pos_weight >= 0, 'model.crd_pos_weight must be >= 0 (0 = balanced)')


def legacy(d):
  """What a run saved before a key existed did, where today's default differs: the small
  CRD, zero/model padding, unweighted BCE, and stage 3 drawing from `anomaly` (with the
  generator options it had then)."""
  out = {'model': {'crd_arch': 'small', 'crd_padding': '', 'crd_pos_weight': 1.0}}
  if 'anomaly' in d:
    out['crd_anomaly'] = {**{k: v for k, v in d['anomaly'].items() if k != 'batching'},
                          'edge': 0.0, 'visible': 0.0, 'procedural': 0, 'holdout': []}
  return out


METHOD = methods.register(methods.Method('rcae', STAGES, build, validate=validate,
                                         legacy=legacy))
