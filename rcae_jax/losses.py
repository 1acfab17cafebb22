"""The training losses of DESIGN.md §1 (intensity + gradient terms) and each stage's
objective built from them."""
import chex
import jax
import jax.numpy as jnp

from rcae_jax import anomalies, ops
from rcae_jax import config as config_lib


def l1_with_gradient(target, pred, grad_weight=1.0):
  """|x - y|_1 + w |∇x - ∇y|_1, means over pixels and channels (stages 1 and 2)."""
  return (jnp.mean(jnp.abs(target - pred))
          + grad_weight * jnp.mean(jnp.abs(ops.sobel(target) - ops.sobel(pred))))


def region_balanced_l1(target, pred, mask, region_weight, grad_weight=1.0):
  """FAE's two-term restoration loss: the mean error over the corrupted region (soft mask
  M) times region_weight, plus the mean error over the rest, per image; intensity + gradient.

  A plain mean lets a defect covering 2 % of the image cost 2 % of the loss, so copying it
  is nearly free; here repairing it weighs as much as reconstructing everything else.
  target, pred (B, H, W, C), mask (B, H, W, 1) in [0, 1]. Clean images (M = 0) get the
  plain mean.
  """
  chex.assert_equal_shape([target, pred])
  chex.assert_shape(mask, target.shape[:3] + (1,))
  area = lambda w: jnp.maximum(jnp.sum(w, axis=(1, 2, 3), keepdims=True), 1e-6)
  weights = (1 - mask) / area(1 - mask) + region_weight * mask / area(mask)

  def term(a, b):
    return jnp.mean(jnp.sum(weights * jnp.mean(jnp.abs(a - b), -1, keepdims=True),
                            axis=(1, 2, 3)))

  return term(target, pred) + grad_weight * term(ops.sobel(target), ops.sobel(pred))


def l2_with_gradient(target, pred, grad_weight=1.0):
  """|M_P - M_A|² + w |∇M_P - ∇M_A|², means (stage 3, the CRD map)."""
  return (jnp.mean(jnp.square(target - pred))
          + grad_weight * jnp.mean(jnp.square(ops.sobel(target) - ops.sobel(pred))))


def bce_with_gradient(target, pred, grad_weight=1.0, eps=1e-6):
  """Binary cross-entropy of the map + w |∇M_P - ∇M_A|² (the `bce` CRD loss option).

  Unlike L2 on a sigmoid output, its gradient does not vanish once the map is pushed to 0
  everywhere, which is where L2 training of the CRD collapses on small, rare defects.
  """
  p = jnp.clip(pred, eps, 1 - eps)
  bce = -jnp.mean(target * jnp.log(p) + (1 - target) * jnp.log(1 - p))
  return bce + grad_weight * jnp.mean(jnp.square(ops.sobel(target) - ops.sobel(pred)))


def stage_objective(stage, model, config, n=None):
  """-> objective(params, frozen, batch, rng) -> (loss, metrics) on one device's examples.

  params are the stage's network's; frozen holds the earlier stages' params and the texture
  bank (`train.frozen_inputs`); batch = {'image': float (b, H, W, C), 'index': (b,)}.
  RcAE's stage 1 trains R_n at the static depth n (one program per n); FAE's one stage
  restores corrupted images with its U-Net.
  """
  gw = config.grad_weight

  def restoration(stage_config, target, pred, mask):
    if stage_config.get('region_weight', 0.0):
      return region_balanced_l1(target, pred, mask, stage_config.region_weight, gw)
    return l1_with_gradient(target, pred, gw)

  def pair(stage_config, frozen, batch, rng):
    return anomalies.restoration_pair(jax.random.fold_in(rng, 2), batch['image'],
                                      batch['index'], frozen.get('textures'), config,
                                      stage_config)

  def stage1(params, frozen, batch, rng):
    x, target, mask = pair(config.stage1, frozen, batch, rng)
    return restoration(config.stage1, target, model.at_depth(params, x, n), mask), {}

  def stage2(params, frozen, batch, rng):
    x, target, mask = pair(config.stage2, frozen, batch, rng)
    seq = jax.lax.stop_gradient(model.sequence(frozen['rcae'], x))
    enh = model.enhance(params, seq, x)  # every D_n against the same clean target
    tile = lambda a: jnp.broadcast_to(a, (enh.shape[0],) + a.shape).reshape(
        (-1,) + a.shape[1:])
    return restoration(config.stage2, tile(target), enh.reshape((-1,) + x.shape[1:]),
                       tile(mask)), {}

  def stage3(params, frozen, batch, rng):
    corrupted, mask = anomalies.synthesize_batch(
        jax.random.fold_in(rng, 1), batch['image'], batch['index'], frozen['textures'], config)
    seq = model.sequence(frozen['rcae'], corrupted)
    enh = jax.lax.stop_gradient(model.enhance(frozen['dpn'], seq, corrupted))
    pred = model.crd_map(params, enh, corrupted)
    if config.model.crd_loss == 'l2':
      return l2_with_gradient(mask, pred, gw), {}
    return bce_with_gradient(mask, pred, config.model.crd_grad_weight), {}

  def fae(params, frozen, batch, rng):
    x, target, mask = pair(config.stage1, frozen, batch, rng)
    return restoration(config.stage1, target, model.reconstruct(params, x), mask), {}

  if config_lib.method(config) == 'fae':
    return fae
  if stage == 1 and n is None:
    raise ValueError('the stage-1 objective needs its recursion depth n')
  return {1: stage1, 2: stage2, 3: stage3}[stage]
