"""Geometric augmentation of the training images, per stage (`stageK.flip`).

A few hundred training images let the networks learn each image, edges included: on MTD the
CRD's map on held-out normals peaks at the tile borders twice as often as on the images it
was trained on (`experiments/border_profile.py`). Flips show every border on every side.
Off by default: flipping is only normal where the product is symmetric (MTD tiles and most
textures are; a transistor's leads are not).
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
