"""The training losses of DESIGN.md §1 (intensity + gradient terms). Each stage's objective
is declared with its method (`rcae_jax/methods/`) and built from these."""
import chex
import jax
import jax.numpy as jnp
import optax

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


def crd_loss(target, logits, config, axis_name=None):
  """The CRD's loss on its logits (B, H, W, 1) against the soft mask M_P (model.crd_loss):

  - 'l2': the paper's |M_P - M_A|² + |∇M_P - ∇M_A|² on the sigmoid map (collapses to an
    all-zero map on small, rare defects in our runs);
  - 'bce': cross-entropy from the logits, positives weighted by model.crd_pos_weight
    (0 = balanced: positives weigh as much as negatives in each batch, since anomalous
    pixels are a few percent of an image);
  - 'focal': the focal loss (DRAEM's), gamma model.crd_focal_gamma, no class weight;
  plus model.crd_grad_weight x the gradient term for bce and focal.
  axis_name: the data-parallel axis when called per device; the balance then counts the
  whole global batch, so the loss does not depend on the device count.
  """
  m = config.model
  chex.assert_equal_shape([target, logits])
  pred = jax.nn.sigmoid(logits)
  if m.crd_loss == 'l2':
    return l2_with_gradient(target, pred, config.grad_weight)
  if m.crd_loss == 'focal':
    per_pixel = optax.sigmoid_focal_loss(logits, target, alpha=None,
                                         gamma=m.get('crd_focal_gamma', 2.0))
  else:
    per_pixel = optax.sigmoid_binary_cross_entropy(logits, target)
    w = m.get('crd_pos_weight', 1.0)
    if w == 0:  # balanced: the two classes' total weights equal, per batch
      pos, size = jnp.sum(target), jnp.float32(target.size)
      if axis_name is not None:
        pos, size = jax.lax.psum(pos, axis_name), jax.lax.psum(size, axis_name)
      w = jax.lax.stop_gradient((size - pos) / jnp.maximum(pos, 1.0))
    per_pixel = per_pixel * (1 + (w - 1) * target)
  grad = jnp.mean(jnp.square(ops.sobel(target) - ops.sobel(pred)))
  return jnp.mean(per_pixel) + m.crd_grad_weight * grad


def restoration(stage_config, target, pred, mask, grad_weight=1.0):
  """A restoring stage's loss: FAE's region-balanced L1 when stage_config.region_weight > 0
  (mask = where the input was corrupted), else the plain intensity + gradient L1."""
  if stage_config.get('region_weight', 0.0):
    return region_balanced_l1(target, pred, mask, stage_config.region_weight, grad_weight)
  return l1_with_gradient(target, pred, grad_weight)
