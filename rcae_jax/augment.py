"""Augmentation of the training images, per stage: random crops (`stageK.crop`), flips
(`stageK.flip`) and a random gain (`stageK.jitter`); and noise on the reconstructions the
CRD reads in training (`stage3.recon_noise`).

Crops let a stage train at a fraction of the whole image's cost while inference runs on
whole images at `data.size` (every network is fully convolutional): the resolution thin
defects need, without its training cost.

A few hundred training images let the networks learn each image, edges included: on MTD the
CRD's high values near the border are 1.2-1.6x the interior's on its training normals and
1.6-2.3x on held-out normals (`experiments/border_profile.py`). Flips show every border on
every side. Off by default: flipping is only normal where the product is symmetric in what
is normal (a transistor's leads are not; on MTD, `stage3.flip=hv` cost 5 test I-AUROC points
while lowering that border response: docs/results/flips.md).

The gain is for the same memorisation seen in brightness: MTD's tiles vary in grey level
(mean 110 +- 34 over the training normals), and the CRD's three highest-scoring held-out
normals of the 64² default are all among the brightest tiles (+1.7 standard deviations),
marked over diffuse texture. `stage3.jitter=0.3` narrowed that gap on MTD (highest held-out
normal score 0.66 -> 0.49) but did not win on validation; test a tie (docs/results/gain.md).

The reconstruction noise is for the leak between the stages (issue 32): stages 1-2 were
fitted on the CRD's training images; if those are reconstructed better than images seen
later, the CRD learns what a *seen* image's reconstruction looks like, and noise on D_n in
training shows it reconstructions no better than an unseen image's. Measured
(`experiments/recon_gap.py`), MTD's stages 1-2 reconstruct every training normal as well as
the held-out ones (ratio 0.95-1.01), bottle's 1.0-1.16x. On MTD `stage3.recon_noise=0.02`
narrowed the CRD's train/held-out gap and did not win on validation
(docs/results/recon-noise.md).
"""
import chex
import jax
import jax.numpy as jnp

MODES = ('', 'h', 'v', 'hv')
CROP_SAMPLING = ('uniform', 'cover')


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


def crops(key, images, index, size, sampling='uniform'):
  """images (B, H, W, C) -> (B, h, w, C): each example's crop at a position drawn from
  fold_in(key, index), like `flips` the same on any number of devices or hosts and after
  a resume. size = (H, W): unchanged.

  sampling 'uniform': each of the H - h + 1 start rows (and columns) equally likely, so a
  crop contains the image's first row with probability 1 / (H - h + 1) (1/65 for 64² crops
  of 128² images): the networks hardly ever see the image's own border, which every
  whole image shown after training has. 'cover': the start drawn uniformly from
  [-(h - 1), H - 1] and clamped into the image, so every pixel, the border's too, lies in a
  crop with the same probability h / (H + h - 1) (a crop holds the first row with 64/191)."""
  chex.assert_rank(images, 4)
  chex.assert_shape(index, (images.shape[0],))
  (h, w), (hh, ww) = size, images.shape[1:3]
  if (h, w) == (hh, ww):
    return images
  if h > hh or w > ww:
    raise ValueError(f'crop {(h, w)} does not fit in images of {(hh, ww)}')

  if sampling not in CROP_SAMPLING:
    raise ValueError(f'crop_sampling={sampling!r} is not one of {CROP_SAMPLING}')

  def start(k, side, crop):
    if sampling == 'uniform':
      return jax.random.randint(k, (), 0, side - crop + 1)
    return jnp.clip(jax.random.randint(k, (), 1 - crop, side), 0, side - crop)

  def one(i, image):
    ky, kx = jax.random.split(jax.random.fold_in(key, i))
    y, x = start(ky, hh, h), start(kx, ww, w)
    return jax.lax.dynamic_slice(image, (y, x, 0), (h, w, image.shape[-1]))
  return jax.vmap(one)(index, images)


def gains(key, images, index, strength):
  """images (B, H, W, C) in [0, 1], each multiplied by exp(U[-strength, strength]) and
  clipped to [0, 1], drawn from fold_in(key, index) like `flips`. strength 0: unchanged."""
  if not 0 <= strength < 1:
    raise ValueError(f'jitter={strength!r} must be in [0, 1) (a log-gain range)')
  if not strength:
    return images
  chex.assert_rank(images, 4)
  chex.assert_shape(index, (images.shape[0],))
  log_gain = jax.vmap(lambda i: jax.random.uniform(
      jax.random.fold_in(key, i), (), minval=-strength, maxval=strength))(index)
  return jnp.clip(images * jnp.exp(log_gain)[:, None, None, None], 0.0, 1.0)


def recon_noise(key, seq, index, strength):
  """seq (S, B, H, W, C) + N(0, s²) per pixel, s ~ U[0, strength] per example, both drawn
  from fold_in(key, index) like `flips`: the same on any number of devices or hosts.
  strength 0: unchanged."""
  if not 0 <= strength <= 0.5:
    raise ValueError(f'recon_noise={strength!r} must be in [0, 0.5] (a std on [0, 1] images)')
  if not strength:
    return seq
  chex.assert_rank(seq, 5)
  chex.assert_shape(index, (seq.shape[1],))

  def one(i):
    ks, kn = jax.random.split(jax.random.fold_in(key, i))
    s = jax.random.uniform(ks, (), minval=0.0, maxval=strength)
    return s * jax.random.normal(kn, seq.shape[:1] + seq.shape[2:], seq.dtype)
  return seq + jnp.moveaxis(jax.vmap(one)(index), 0, 1)
