"""The three training losses of DESIGN.md §1: intensity + gradient terms."""
import chex
import jax.numpy as jnp

from rcae_jax import ops


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


def reconstruction_error_map(x, recon, grad_weight=1.0):
  """Per-pixel anomaly map of a reconstruction: channel-mean intensity + gradient error."""
  err = jnp.mean(jnp.abs(x - recon), axis=-1, keepdims=True)
  gerr = jnp.mean(jnp.abs(ops.sobel(x) - ops.sobel(recon)), axis=-1, keepdims=True)
  return err + grad_weight * gerr


def bce_with_gradient(target, pred, grad_weight=1.0, eps=1e-6):
  """Binary cross-entropy of the map + w |∇M_P - ∇M_A|² (the `bce` CRD loss option).

  Unlike L2 on a sigmoid output, its gradient does not vanish once the map is pushed to 0
  everywhere, which is where L2 training of the CRD collapses on small, rare defects.
  """
  p = jnp.clip(pred, eps, 1 - eps)
  bce = -jnp.mean(target * jnp.log(p) + (1 - target) * jnp.log(1 - p))
  return bce + grad_weight * jnp.mean(jnp.square(ops.sobel(target) - ops.sobel(pred)))
