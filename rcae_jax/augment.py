"""Geometric augmentation of the training images, per stage (`stageK.flip`).

A few hundred training images let the networks learn each image, edges included: on MTD the
CRD's high values near the border are 1.2-1.6x the interior's on its training normals and
1.6-2.3x on held-out normals (`experiments/border_profile.py`). Flips show every border on
every side. Off by default: flipping is only normal where the product is symmetric in what
is normal (a transistor's leads are not; on MTD, `stage3.flip=hv` cost 5 test I-AUROC points
while lowering that border response: README, "Random flips").
"""
import chex
import jax
import jax.numpy as jnp

MODES = ('', 'h', 'v', 'hv')


def flips(key, images, index, mode):
  """images (B, H, W, C) each flipped left-right ('h' in mode) and/or top-bottom ('v'), each
  with probability 1/2, drawn from fold_in(key, index): an example's flips depend on its
  stream position alone, so they are the same on any number of devices or hosts."""
  if mode not in MODES:
    raise ValueError(f'flip={mode!r} is not one of {MODES}')
  if not mode:
    return images
  chex.assert_rank(images, 4)
  chex.assert_shape(index, (images.shape[0],))
  coins = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i), 0.5, (2,)))(index)
  if 'h' in mode:
    images = jnp.where(coins[:, 0, None, None, None], images[:, :, ::-1], images)
  if 'v' in mode:
    images = jnp.where(coins[:, 1, None, None, None], images[:, ::-1], images)
  return images
