"""Pseudo-anomalies for stage 3: (image, rng) -> (corrupted image, soft mask).

A shape (where) and a filler (what) are drawn independently, blended with a random
opacity (FAE's shape x texture x opacity). Shapes follow the CutPaste/DRAEM/FAE families:
rotated patches, elastic blobs (thresholded smooth noise), straight scratches, thin Bezier
curves, large soft regions, thresholded Perlin noise (DRAEM), thin random-walk cracks and
FAE's bulky-plus-thin union; with probability `edge` a shape is moved onto an image border
(breaks and frays sit there). Fillers are a flat colour, a copy of another region, another
image, a texture (real crops and procedural ones, augmented when drawn), Gaussian noise, or
a brightness/contrast change of the image itself. With `visible` > 0 a pasted pixel is
labelled only as far as it visibly changed the image: a copy of similar texture, or a faint
paste, is not taught as an anomaly.
All functions are pure and jittable; masks are anti-aliased (soft edges).
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rcae_jax import ops, sizes


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


def _centre(key, h, w, lo, hi, edge):
  """A point uniform in [lo, hi] of the image; with probability `edge` moved onto one of the
  four borders (up to 3 % of the side inside it). Drawn from key alone when edge = 0."""
  c = jax.random.uniform(key, (2,), minval=lo, maxval=hi) * jnp.array([h, w])
  if not edge:
    return c
  ke, ka, ks, kj = jax.random.split(jax.random.fold_in(key, 1), 4)
  axis = jax.random.randint(ka, (), 0, 2)
  side = jax.random.bernoulli(ks).astype(jnp.float32)
  on = (side + (1 - 2 * side) * jax.random.uniform(kj, (), maxval=0.03)) * jnp.array(
      [h, w], jnp.float32)[axis]
  return jnp.where(jax.random.bernoulli(ke, edge), c.at[axis].set(on), c)


def _patch(key, h, w, max_size, edge=0.0):
  kc, ks, ka = jax.random.split(key, 3)
  c = _centre(kc, h, w, 0.1, 0.9, edge)
  half = jax.random.uniform(ks, (2,), minval=0.02, maxval=max_size / 2) * min(h, w) + 1.0
  ang = jax.random.uniform(ka, (), maxval=jnp.pi)
  yy, xx = _grid(h, w)
  u = (yy - c[0]) * jnp.cos(ang) + (xx - c[1]) * jnp.sin(ang)
  v = -(yy - c[0]) * jnp.sin(ang) + (xx - c[1]) * jnp.cos(ang)
  inside = jnp.minimum(half[0] - jnp.abs(u), half[1] - jnp.abs(v))  # pixels to the border
  return jnp.clip(inside + 0.5, 0.0, 1.0)


def _blob(key, h, w, max_size, edge=0.0):
  kc, kr, kn = jax.random.split(key, 3)
  c = _centre(kc, h, w, 0.15, 0.85, edge)
  r = jax.random.uniform(kr, (), minval=0.03, maxval=max_size / 2) * min(h, w) + 1.0
  noise = jax.image.resize(jax.random.normal(kn, (6, 6)), (h, w), 'cubic')
  yy, xx = _grid(h, w)
  env = jnp.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / (2 * r ** 2))
  field = env * (1.0 + 0.6 * noise)
  return jnp.clip((field - 0.5) * 8.0, 0.0, 1.0)


def _line(key, h, w, max_size, edge=0.0):
  ka, kd, kl, kw = jax.random.split(key, 4)
  a = _centre(ka, h, w, 0.1, 0.9, edge)
  ang = jax.random.uniform(kd, (), maxval=2 * jnp.pi)
  length = jax.random.uniform(kl, (), minval=0.1, maxval=max(max_size * 1.5, 0.15)) * min(h, w)
  b = a + length * jnp.array([jnp.sin(ang), jnp.cos(ang)])
  width = jax.random.uniform(kw, (), minval=1.0, maxval=max(2.0, min(h, w) / 32))
  yy, xx = _grid(h, w)
  return jnp.clip(width / 2 - _seg_dist(yy, xx, a, b) + 0.5, 0.0, 1.0)


def _curve(key, h, w, max_size, edge=0.0):
  kp, kw = jax.random.split(key)
  p = jax.random.uniform(kp, (3, 2), minval=0.1, maxval=0.9) * jnp.array([h, w])
  p = p[0] + (p - p[0]) * max_size * 2  # keep the curve's extent near max_size
  if edge:
    p = p - p[0] + _centre(jax.random.fold_in(kp, 7), h, w, 0.1, 0.9, edge)
  t = jnp.linspace(0.0, 1.0, 17)[:, None]
  pts = (1 - t) ** 2 * p[0] + 2 * (1 - t) * t * p[1] + t ** 2 * p[2]
  width = jax.random.uniform(kw, (), minval=1.0, maxval=2.0)
  yy, xx = _grid(h, w)
  d = jax.vmap(lambda a, b: _seg_dist(yy, xx, a, b))(pts[:-1], pts[1:]).min(axis=0)
  return jnp.clip(width / 2 - d + 0.5, 0.0, 1.0)


def _region(key, h, w, max_size, edge=0.0):
  """A large smooth-edged area (up to twice max_size across): region-scale defects such as
  uneven shading, which the compact shapes above never teach the CRD. Its centre is anywhere
  in the image already (edge is not used)."""
  del max_size, edge
  kc, kr, kn = jax.random.split(key, 3)
  c = jax.random.uniform(kc, (2,), minval=0.0, maxval=1.0) * jnp.array([h, w])
  r = jax.random.uniform(kr, (), minval=0.15, maxval=0.35) * min(h, w)
  noise = jax.image.resize(jax.random.normal(kn, (4, 4)), (h, w), 'cubic')
  yy, xx = _grid(h, w)
  d = jnp.hypot(yy - c[0], xx - c[1]) / r + 0.3 * noise
  return jnp.clip((1.0 - d) * 3.0, 0.0, 1.0)  # edges soft over a third of the radius


def perlin(key, h, w, cells):
  """2-D Perlin gradient noise (about [-0.7, 0.7]) with `cells` (2,) lattice cells across
  the image (may be fractional, at most 16): random unit gradients on the lattice, dotted
  with the offsets, blended by the quintic fade."""
  grads = jax.random.normal(key, (18, 18, 2))
  grads = grads / jnp.linalg.norm(grads, axis=-1, keepdims=True)
  yy, xx = _grid(h, w)
  py, px = yy / h * cells[0], xx / w * cells[1]
  iy, ix = jnp.floor(py).astype(jnp.int32), jnp.floor(px).astype(jnp.int32)
  fy, fx = py - iy, px - ix

  def dot(dy, dx):
    g = grads[iy + dy, ix + dx]
    return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

  fade = lambda t: t * t * t * (t * (t * 6 - 15) + 10)
  uy, ux = fade(fy), fade(fx)
  top = dot(0, 0) * (1 - ux) + dot(0, 1) * ux
  bottom = dot(1, 0) * (1 - ux) + dot(1, 1) * ux
  return top * (1 - uy) + bottom * uy


def _perlin(key, h, w, max_size, edge=0.0):
  """DRAEM's masks: Perlin noise (1 to 8 cells per side, per axis) above a threshold (30-70 %
  of its maximum);
  scattered, irregular islands anywhere, borders included (edge is not used)."""
  del max_size, edge
  kn, ks, kt = jax.random.split(key, 3)
  cells = 2.0 ** jax.random.uniform(ks, (2,), minval=0.0, maxval=3.0)
  noise = perlin(kn, h, w, cells)
  noise = noise / jnp.maximum(noise.max(), 1e-6)  # never empty
  t = jax.random.uniform(kt, (), minval=0.3, maxval=0.7)
  return jnp.clip((noise - t) * 12.0, 0.0, 1.0)


def _crack(key, h, w, max_size, edge=0.0):
  """A thin crack: a 16-segment random walk (turning by N(0, 0.35) rad per segment), 0.7
  to 1.8 px wide, up to twice max_size long; starts on a border with probability `edge`."""
  ka, kd, kt, kl, kw = jax.random.split(key, 5)
  a = _centre(ka, h, w, 0.1, 0.9, edge)
  ang = jax.random.uniform(kd, (), maxval=2 * jnp.pi) + jnp.cumsum(
      0.35 * jax.random.normal(kt, (16,)))
  length = jax.random.uniform(kl, (), minval=0.15, maxval=max(2 * max_size, 0.2)) * min(h, w)
  steps = (length / 16) * jnp.stack([jnp.sin(ang), jnp.cos(ang)], axis=-1)
  pts = jnp.concatenate([a[None], a + jnp.cumsum(steps, axis=0)])
  width = jax.random.uniform(kw, (), minval=0.7, maxval=1.8)
  yy, xx = _grid(h, w)
  d = jax.vmap(lambda p, q: _seg_dist(yy, xx, p, q))(pts[:-1], pts[1:]).min(axis=0)
  return jnp.clip(width / 2 - d + 0.5, 0.0, 1.0)


def _fae(key, h, w, max_size, edge=0.0):
  """FAE's occlusions: a bulky elastic ellipse with an independent thin curve on top."""
  kb, kc = jax.random.split(key)
  return jnp.maximum(_blob(kb, h, w, max_size, edge), _crack(kc, h, w, max_size, edge))


SHAPES = {'patch': _patch, 'blob': _blob, 'line': _line, 'curve': _curve, 'region': _region,
          'perlin': _perlin, 'crack': _crack, 'fae': _fae}


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
  """A bank texture, augmented: one of the 8 rotations/flips (square images), gain, contrast
  about its mean and a gamma."""
  del other
  ki, kb, kr, kc, kg = jax.random.split(key, 5)
  tex = textures[jax.random.randint(ki, (), 0, textures.shape[0])]
  if tex.shape[0] == tex.shape[1]:
    tex = jax.lax.switch(jax.random.randint(kr, (), 0, 8), [
        lambda t, k=k, f=f: jnp.rot90(t[:, ::-1] if f else t, k) for f in (0, 1)
        for k in range(4)], tex)
  contrast = jax.random.uniform(kc, (), minval=0.6, maxval=1.5)
  tex = (tex - tex.mean()) * contrast + tex.mean()
  tex = jnp.clip(tex * jax.random.uniform(kb, (), minval=0.6, maxval=1.4), 0.0, 1.0)
  return (tex ** (2.0 ** jax.random.uniform(kg, (), minval=-1.0, maxval=1.0))).astype(x.dtype)


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
               p_clean=0.2, min_opacity=0.5, max_size=0.3, edge=0.0, visible=0.0):
  """One pseudo-anomaly. x, other: (H, W, C) in [0, 1]; textures: (T, H, W, C).

  Returns (corrupted (H, W, C), mask (H, W, 1) in [0, 1]). visible > 0: the mask is scaled
  by how far the paste changed the image, |corrupted - x| (max over channels, 3x3 mean)
  / visible, capped at 1.
  """
  chex.assert_rank(x, 3)
  chex.assert_equal_shape([x, other])
  chex.assert_equal_shape([x, textures[0]])
  h, w, _ = x.shape
  ks, kf, ko, kc, kshape, kfill = jax.random.split(key, 6)
  shape_fns = [functools.partial(SHAPES[s], h=h, w=w, max_size=max_size, edge=edge)
               for s in shapes]
  fill_fns = [FILLERS[f] for f in fillers]
  mask = jax.lax.switch(jax.random.randint(ks, (), 0, len(shape_fns)), shape_fns, kshape)
  fill = jax.lax.switch(jax.random.randint(kf, (), 0, len(fill_fns)), fill_fns,
                        kfill, x, other, textures)
  mask = mask * (jax.random.uniform(kc) >= p_clean)
  alpha = mask * jax.random.uniform(ko, (), minval=min_opacity, maxval=1.0)
  corrupted = x * (1 - alpha[..., None]) + fill * alpha[..., None]
  if visible:
    change = jnp.max(jnp.abs(corrupted - x), axis=-1, keepdims=True)
    change = ops.mean_filter(change[None], 3)[0, ..., 0]
    mask = mask * jnp.clip(change / visible, 0.0, 1.0)
  return corrupted, mask[..., None]


def generator(config, group='crd_anomaly'):
  """`synthesize`'s keyword arguments from a config group of pseudo-anomalies (the stage
  declares which: RcAE's restoring stages draw from `anomaly`, its CRD from `crd_anomaly`),
  less the group's `holdout` families (shape or filler names; the `generalisation` sweep
  validates on them)."""
  a = config[group]
  holdout = tuple(a.get('holdout', ()))
  return dict(shapes=tuple(s for s in a.shapes if s not in holdout),
              fillers=tuple(f for f in a.fillers if f not in holdout), p_clean=a.p_clean,
              min_opacity=a.min_opacity, max_size=a.max_size, edge=a.get('edge', 0.0),
              visible=a.get('visible', 0.0))


def _partners(images):
  """Example i's "other image" is example i xor 1: with an even per-device batch the pair
  never straddles two devices, so the fillers do not depend on the device count."""
  b = images.shape[0]
  if b % 2:
    return jnp.roll(images, 1, axis=0)
  return images.reshape((b // 2, 2) + images.shape[1:])[:, ::-1].reshape(images.shape)


def one_at_a_time(config, shape=None, backend=None):
  """anomaly.batching: 'map' draws the examples one after another (lax.map), so only each
  example's own shape and filler are computed: under vmap `lax.switch` becomes a select
  over every branch, for every example (the curve alone is 16 full-size distance maps).
  'auto' maps on a CPU backend at every size and elsewhere from 512² pixels up (`shape`:
  the examples' (h, w); the image size when not given). On a CPU the vmapped drawing is
  also the slower one inside a training step, as XLA:CPU fuses it, every branch, into
  each fusion that reads the drawn image and recomputes it there (a `mtd.py:cpu` stage-3
  step 0.86x, docs/benchmarks.md); on a GPU vmap may be the faster at small sizes."""
  b = config.anomaly.get('batching', 'auto')
  h, w = shape or sizes.image_size(config)
  backend = backend or jax.default_backend()
  return b == 'map' or (b == 'auto' and (backend == 'cpu' or h * w >= 512 * 512))


def synthesize_batch(key, images, indices, textures, config, group='crd_anomaly'):
  """Per-example keys from (step key, global example index): device-count independent, and
  the same examples whether drawn mapped or vmapped (`one_at_a_time`). The families are
  the config group's (`generator`)."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
  other = _partners(images)
  fn = functools.partial(synthesize, **generator(config, group))
  if one_at_a_time(config, images.shape[1:3]):
    return jax.lax.map(lambda kio: fn(*kio, textures), (keys, images, other))
  return jax.vmap(fn, in_axes=(0, 0, 0, None))(keys, images, other, textures)


_TEXTURE_SOURCES = ('moon', 'coins', 'camera', 'text', 'hubble_deep_field',
                    'immunohistochemistry', 'cell', 'page')


def texture_bank(size, channels, per_source=2, seed=0, procedural=0):
  """Texture fillers: (T, H, W, C) float32 in [0, 1] at size (h, w) (an int: a square).
  Read-only and cached per arguments: every stage and every cross-fitting fold of a run
  reads the same bank, and building one (scikit-image files, Perlin noise) takes a second.

  Real textures: `per_source` random crops of each image shipped in scikit-image
  (deliberately excluding brick/grass/gravel, the built-in dataset's own textures, so the
  pseudo-anomalies never contain the real test anomalies). `procedural` more: fractal
  Perlin noise, gratings and cellular patterns with random scales, angles and colours
  (`procedural_textures`); `_texture` augments every draw.
  """
  return _texture_bank(sizes.as_pair(size), channels, per_source, seed, procedural)


@functools.lru_cache(maxsize=8)
def _texture_bank(size, channels, per_source, seed, procedural):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  h, w = size
  out = []
  for name in _TEXTURE_SOURCES:
    img = np.asarray(getattr(skdata, name)())
    if img.ndim == 2:
      img = np.repeat(img[..., None], 3, axis=-1)
    hh, ww = img.shape[:2]
    for _ in range(per_source):
      side = int(min(hh, ww) * rng.uniform(0.4, 1.0))  # a square's draws, as before
      if w >= h:  # a box of the target's aspect
        ch, cw = side, min(ww, round(side * w / h))
      else:
        ch, cw = min(hh, round(side * h / w)), side
      y, x = rng.integers(0, hh - ch + 1), rng.integers(0, ww - cw + 1)
      crop = Image.fromarray(img[y:y + ch, x:x + cw, :3]).resize((w, h), Image.BILINEAR)
      out.append(np.asarray(crop, np.float32) / 255.0)
  bank = np.stack(out)
  if procedural:
    bank = np.concatenate([bank, procedural_textures((h, w), procedural, seed)])
  if channels == 1:
    bank = bank.mean(axis=-1, keepdims=True)
  bank.setflags(write=False)
  return bank


def procedural_textures(size, n, seed=0):
  """n textures (n, H, W, 3) in [0, 1], cycling through three kinds: fractal Perlin noise
  (4 octaves), a grating (a sine along a random direction, distorted by Perlin noise) and
  a cellular pattern (distance to the nearest of random seeds); two random colours each."""
  key = jax.random.PRNGKey(seed + 12345)
  rng = np.random.default_rng(seed + 1)
  h, w = sizes.as_pair(size)
  yy, xx = (np.asarray(a) for a in _grid(h, w))
  out = []
  for i in range(n):
    key, k1, k2 = jax.random.split(key, 3)
    base = rng.uniform(1.0, 4.0)
    if i % 3 == 0:
      field = sum(0.5 ** o * np.asarray(perlin(jax.random.fold_in(k1, o), h, w,
                                               jnp.full((2,), min(base * 2 ** o, 16.0))))
                  for o in range(4))
    elif i % 3 == 1:
      ang, freq = rng.uniform(0, np.pi), rng.uniform(4, 24)
      warp = np.asarray(perlin(k1, h, w, jnp.full((2,), base)))
      field = np.sin(2 * np.pi * freq * ((yy * np.sin(ang) + xx * np.cos(ang)) / h + 0.3 * warp))
    else:
      seeds = rng.uniform(0, np.array([h, w]), (int(rng.integers(8, 40)), 2))
      field = np.sqrt(((np.stack([yy, xx], -1)[:, :, None] - seeds) ** 2).sum(-1)).min(-1)
    field = (field - field.min()) / max(np.ptp(field), 1e-6)
    lo = rng.uniform(0.0, 0.5)  # two colours at least 0.3 apart in brightness
    c0, c1 = (np.clip(g + rng.uniform(-0.15, 0.15, 3), 0, 1)
              for g in (lo, lo + rng.uniform(0.3, 0.5)))
    out.append((c0 + (c1 - c0) * field[..., None]).astype(np.float32))
  return np.stack(out)


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


def restoration_pair(key, images, indices, textures, config, stage_config, group='anomaly'):
  """(input, target, mask) of a restoration stage: pseudo-anomalous input drawn from the
  config group `group` and its soft mask (when `stage_config.restore`; else the image and
  an empty mask), clean target, plus identity noise (`stage_config.noise`)."""
  inputs, mask = images, jnp.zeros(images.shape[:3] + (1,), images.dtype)
  if stage_config.restore:
    if textures is None:
      raise ValueError('a restoring stage draws pseudo-anomalies and needs the texture bank: '
                       'pass training.frozen_inputs(stage, params, config) as its frozen inputs')
    inputs, mask = synthesize_batch(jax.random.fold_in(key, 0), images, indices, textures,
                                    config, group)
  inputs, targets = identity_noise(jax.random.fold_in(key, 1), inputs, images, indices,
                                   stage_config.noise)
  return inputs, targets, mask
