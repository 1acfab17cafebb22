"""Pseudo-anomalies for stage 3: (image, rng) -> (corrupted image, soft mask).

A shape (where) and a filler (what) are drawn independently, blended with a random
opacity. Shapes follow the CutPaste/DRAEM/FAE families: rotated patches, elastic blobs
(thresholded smooth noise), straight scratches, thin Bezier curves and large soft regions;
fillers are a flat colour, a copy of another region, another image, a real texture,
Gaussian noise, or a brightness/contrast change of the image itself.
All functions are pure and jittable; masks are anti-aliased (soft edges).
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np


def _grid(h, w):
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing='ij')
  return yy, xx


def _seg_dist(yy, xx, a, b):
  """Distance (pixels) of every pixel to the segment a-b."""
  ab = b - a
  t = ((yy - a[0]) * ab[0] + (xx - a[1]) * ab[1]) / jnp.maximum(jnp.sum(ab * ab), 1e-6)
  t = jnp.clip(t, 0.0, 1.0)
  return jnp.hypot(yy - a[0] - t * ab[0], xx - a[1] - t * ab[1])


def _patch(key, h, w, max_size):
  kc, ks, ka = jax.random.split(key, 3)
  c = jax.random.uniform(kc, (2,), minval=0.1, maxval=0.9) * jnp.array([h, w])
  half = jax.random.uniform(ks, (2,), minval=0.02, maxval=max_size / 2) * min(h, w) + 1.0
  ang = jax.random.uniform(ka, (), maxval=jnp.pi)
  yy, xx = _grid(h, w)
  u = (yy - c[0]) * jnp.cos(ang) + (xx - c[1]) * jnp.sin(ang)
  v = -(yy - c[0]) * jnp.sin(ang) + (xx - c[1]) * jnp.cos(ang)
  inside = jnp.minimum(half[0] - jnp.abs(u), half[1] - jnp.abs(v))  # pixels to the border
  return jnp.clip(inside + 0.5, 0.0, 1.0)


def _blob(key, h, w, max_size):
  kc, kr, kn = jax.random.split(key, 3)
  c = jax.random.uniform(kc, (2,), minval=0.15, maxval=0.85) * jnp.array([h, w])
  r = jax.random.uniform(kr, (), minval=0.03, maxval=max_size / 2) * min(h, w) + 1.0
  noise = jax.image.resize(jax.random.normal(kn, (6, 6)), (h, w), 'cubic')
  yy, xx = _grid(h, w)
  env = jnp.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / (2 * r ** 2))
  field = env * (1.0 + 0.6 * noise)
  return jnp.clip((field - 0.5) * 8.0, 0.0, 1.0)


def _line(key, h, w, max_size):
  ka, kd, kl, kw = jax.random.split(key, 4)
  a = jax.random.uniform(ka, (2,), minval=0.1, maxval=0.9) * jnp.array([h, w])
  ang = jax.random.uniform(kd, (), maxval=2 * jnp.pi)
  length = jax.random.uniform(kl, (), minval=0.1, maxval=max(max_size * 1.5, 0.15)) * min(h, w)
  b = a + length * jnp.array([jnp.sin(ang), jnp.cos(ang)])
  width = jax.random.uniform(kw, (), minval=1.0, maxval=max(2.0, min(h, w) / 32))
  yy, xx = _grid(h, w)
  return jnp.clip(width / 2 - _seg_dist(yy, xx, a, b) + 0.5, 0.0, 1.0)


def _curve(key, h, w, max_size):
  kp, kw = jax.random.split(key)
  p = jax.random.uniform(kp, (3, 2), minval=0.1, maxval=0.9) * jnp.array([h, w])
  p = p[0] + (p - p[0]) * max_size * 2  # keep the curve's extent near max_size
  t = jnp.linspace(0.0, 1.0, 17)[:, None]
  pts = (1 - t) ** 2 * p[0] + 2 * (1 - t) * t * p[1] + t ** 2 * p[2]
  width = jax.random.uniform(kw, (), minval=1.0, maxval=2.0)
  yy, xx = _grid(h, w)
  d = jax.vmap(lambda a, b: _seg_dist(yy, xx, a, b))(pts[:-1], pts[1:]).min(axis=0)
  return jnp.clip(width / 2 - d + 0.5, 0.0, 1.0)


def _region(key, h, w, max_size):
  """A large smooth-edged area (up to twice max_size across): region-scale defects such as
  uneven shading, which the compact shapes above never teach the CRD."""
  del max_size
  kc, kr, kn = jax.random.split(key, 3)
  c = jax.random.uniform(kc, (2,), minval=0.0, maxval=1.0) * jnp.array([h, w])
  r = jax.random.uniform(kr, (), minval=0.15, maxval=0.35) * min(h, w)
  noise = jax.image.resize(jax.random.normal(kn, (4, 4)), (h, w), 'cubic')
  yy, xx = _grid(h, w)
  d = jnp.hypot(yy - c[0], xx - c[1]) / r + 0.3 * noise
  return jnp.clip((1.0 - d) * 3.0, 0.0, 1.0)  # edges soft over a third of the radius


SHAPES = {'patch': _patch, 'blob': _blob, 'line': _line, 'curve': _curve, 'region': _region}


def _shift(key, img):
  h, w = img.shape[:2]
  s = jax.random.randint(key, (2,), jnp.array([h // 4, w // 4]), jnp.array([3 * h // 4, 3 * w // 4]))
  return jnp.roll(img, (s[0], s[1]), axis=(0, 1))


def _color(key, x, other, textures):
  del other, textures
  return jnp.broadcast_to(jax.random.uniform(key, (x.shape[-1],)), x.shape)


def _copy(key, x, other, textures):
  del other, textures
  return _shift(key, x)


def _other(key, x, other, textures):
  del x, textures
  return _shift(key, other)


def _texture(key, x, other, textures):
  del other
  ki, kb = jax.random.split(key)
  tex = textures[jax.random.randint(ki, (), 0, textures.shape[0])]
  return jnp.clip(tex * jax.random.uniform(kb, (), minval=0.6, maxval=1.4), 0.0, 1.0).astype(x.dtype)


def _noise(key, x, other, textures):
  del other, textures
  ks, kn = jax.random.split(key)
  sigma = jax.random.uniform(ks, (), minval=0.1, maxval=0.3)
  return jnp.clip(x + sigma * jax.random.normal(kn, x.shape), 0.0, 1.0)


def _intensity(key, x, other, textures):
  """The image itself, darker or brighter and with changed contrast: low-contrast defects."""
  del other, textures
  kg, kb, ks = jax.random.split(key, 3)
  gain = jax.random.uniform(kg, (), minval=0.6, maxval=1.2)
  shift = jnp.where(jax.random.bernoulli(ks), 1.0, -1.0) * jax.random.uniform(
      kb, (), minval=0.08, maxval=0.25)
  return jnp.clip((x - x.mean()) * gain + x.mean() + shift, 0.0, 1.0)


FILLERS = {'color': _color, 'copy': _copy, 'other': _other, 'texture': _texture,
           'noise': _noise, 'intensity': _intensity}


def synthesize(key, x, other, textures, *, shapes=tuple(SHAPES), fillers=tuple(FILLERS),
               p_clean=0.2, min_opacity=0.5, max_size=0.3):
  """One pseudo-anomaly. x, other: (H, W, C) in [0, 1]; textures: (T, H, W, C).

  Returns (corrupted (H, W, C), mask (H, W, 1) in [0, 1]).
  """
  chex.assert_rank(x, 3)
  chex.assert_equal_shape([x, other])
  chex.assert_equal_shape([x, textures[0]])
  h, w, _ = x.shape
  ks, kf, ko, kc, kshape, kfill = jax.random.split(key, 6)
  shape_fns = [functools.partial(SHAPES[s], h=h, w=w, max_size=max_size) for s in shapes]
  fill_fns = [FILLERS[f] for f in fillers]
  mask = jax.lax.switch(jax.random.randint(ks, (), 0, len(shape_fns)), shape_fns, kshape)
  fill = jax.lax.switch(jax.random.randint(kf, (), 0, len(fill_fns)), fill_fns,
                        kfill, x, other, textures)
  mask = mask * (jax.random.uniform(kc) >= p_clean)
  alpha = mask * jax.random.uniform(ko, (), minval=min_opacity, maxval=1.0)
  corrupted = x * (1 - alpha[..., None]) + fill * alpha[..., None]
  return corrupted, mask[..., None]


def _partners(images):
  """Example i's "other image" is example i xor 1: with an even per-device batch the pair
  never straddles two devices, so the fillers do not depend on the device count."""
  b = images.shape[0]
  if b % 2:
    return jnp.roll(images, 1, axis=0)
  return images.reshape((b // 2, 2) + images.shape[1:])[:, ::-1].reshape(images.shape)


def one_at_a_time(config):
  """anomaly.batching: 'map' draws the examples one after another (lax.map), so only each
  example's own shape and filler are computed: under vmap `lax.switch` becomes a select
  over every branch, for every example (the curve alone is 16 full-size distance maps).
  'vmap' is faster at small sizes; 'auto' maps from 512² up."""
  b = config.anomaly.get('batching', 'auto')
  return b == 'map' or (b == 'auto' and config.data.resolution >= 512)


def synthesize_batch(key, images, indices, textures, config):
  """Per-example keys from (step key, global example index): device-count independent, and
  the same examples whether drawn mapped or vmapped (`one_at_a_time`)."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
  other = _partners(images)
  a = config.anomaly
  fn = functools.partial(synthesize, shapes=tuple(a.shapes), fillers=tuple(a.fillers),
                         p_clean=a.p_clean, min_opacity=a.min_opacity, max_size=a.max_size)
  if one_at_a_time(config):
    return jax.lax.map(lambda kio: fn(*kio, textures), (keys, images, other))
  return jax.vmap(fn, in_axes=(0, 0, 0, None))(keys, images, other, textures)


_TEXTURE_SOURCES = ('moon', 'coins', 'camera', 'text', 'hubble_deep_field',
                    'immunohistochemistry', 'cell', 'page')


def texture_bank(resolution, channels, per_source=2, seed=0):
  """Real-texture fillers from images shipped in scikit-image: (T, H, W, C) float32.

  Deliberately excludes brick/grass/gravel, the built-in dataset's own textures, so the
  pseudo-anomalies never contain the real test anomalies.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  out = []
  for name in _TEXTURE_SOURCES:
    img = np.asarray(getattr(skdata, name)())
    if img.ndim == 2:
      img = np.repeat(img[..., None], 3, axis=-1)
    hh, ww = img.shape[:2]
    for _ in range(per_source):
      side = int(min(hh, ww) * rng.uniform(0.4, 1.0))
      y, x = rng.integers(0, hh - side + 1), rng.integers(0, ww - side + 1)
      crop = Image.fromarray(img[y:y + side, x:x + side, :3]).resize(
          (resolution, resolution), Image.BILINEAR)
      out.append(np.asarray(crop, np.float32) / 255.0)
  bank = np.stack(out)
  if channels == 1:
    bank = bank.mean(axis=-1, keepdims=True)
  return bank


def identity_noise(key, inputs, targets, indices, max_std):
  """FAE's identity anchor: the same Gaussian noise on input and target, std ~ U[0, max_std]
  per image (a range, not one level, so the model is not tuned to one noise level).
  Per-example keys from the global index, like `synthesize_batch`."""
  chex.assert_equal_shape([inputs, targets])
  if not max_std:
    return inputs, targets

  def one(i, inp, tgt):
    ks, kn = jax.random.split(jax.random.fold_in(key, i))
    eps = jax.random.uniform(ks, (), maxval=max_std) * jax.random.normal(kn, inp.shape)
    return jnp.clip(inp + eps, 0.0, 1.0), jnp.clip(tgt + eps, 0.0, 1.0)

  return jax.vmap(one)(indices, inputs, targets)


def restoration_pair(key, images, indices, textures, config, stage_config):
  """(input, target, mask) of a restoration stage: pseudo-anomalous input and its soft mask
  (when `stage_config.restore`; else the image and an empty mask), clean target, plus
  identity noise (`stage_config.noise`)."""
  inputs, mask = images, jnp.zeros(images.shape[:3] + (1,), images.dtype)
  if stage_config.restore:
    if textures is None:
      raise ValueError('a restoring stage draws pseudo-anomalies and needs the texture bank: '
                       'pass train.frozen_inputs(stage, params, config) as its frozen inputs')
    inputs, mask = synthesize_batch(jax.random.fold_in(key, 0), images, indices, textures,
                                    config)
  inputs, targets = identity_noise(jax.random.fold_in(key, 1), inputs, images, indices,
                                   stage_config.noise)
  return inputs, targets, mask
