"""The one inference path: images -> smoothed anomaly maps and image scores.

`make_inference` is the pure function; `compiled` jits it over a device mesh (params
replicated, the batch split over the devices, as in training); `batches` streams it over
host images in fixed-size batches (the last one padded) so a whole test set compiles once,
and `run` collects the stream.
`evaluate`, `predict`, the evaluators, `dynamics` and `bench` all go through here.

Every network is fully convolutional, so inference runs on the whole image at `data.size`
whatever size the stages trained on (`stageK.crop`), or with `infer.tile` on overlapping
tiles, one after another (`tiled`): memory of one tile batch at any image size. A tile's raw
map equals the whole image's where the pixel's receptive field lies inside the tile and the
networks do not normalise (model.groups = 0); with GroupNorm a tile's statistics are its
own, so tiles should be no smaller than the training crops (tests/test_sizes.py bounds both).
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rcae_jax import config as config_lib
from rcae_jax import model as model_lib
from rcae_jax import crossfit, ops, parallel, sizes

SEQUENCES = ('recon', 'enhanced')  # outputs laid out (N, B, ...); the rest are batch-first


def smoothing_sigma(config):
  """score.sigma is given in pixels at 256² (HFR's 4) and scales with the image size."""
  return config.score.sigma * sizes.scale(config)


def smooth(raw, config):
  """score.smoothing: 'gaussian' (score.sigma) or 'mean' (FAE: score.mean_repeats
  applications of a score.mean_size box filter, the size given at 256² and scaled)."""
  s = config.score
  if s.get('smoothing', 'gaussian') == 'mean':
    size = max(1, round(s.mean_size * sizes.scale(config))) | 1  # odd: centred
    return ops.mean_filter(raw, size, s.mean_repeats)
  return ops.gaussian_blur(raw, smoothing_sigma(config))


def image_score(smoothed_map, config, valid=None):
  """score.image: 'max', 'topk' (mean of the score.topk largest) or 'sum' (FAE's default
  reduction; the mean, which ranks images the same), over the pixels `valid` (B, H, W)
  marks (kept-aspect images: not the padding), or over all."""
  flat = smoothed_map.reshape(smoothed_map.shape[0], -1)
  if valid is None:
    if config.score.image == 'max':
      return flat.max(axis=1)
    if config.score.image == 'sum':
      return flat.mean(axis=1)
    return jax.lax.top_k(flat, min(config.score.topk, flat.shape[1]))[0].mean(axis=1)
  keep = valid.reshape(flat.shape)
  if config.score.image == 'sum':
    return jnp.where(keep, flat, 0).sum(axis=1) / jnp.maximum(keep.sum(axis=1), 1)
  flat = jnp.where(keep, flat, -jnp.inf)
  if config.score.image == 'max':
    return flat.max(axis=1)
  top = jax.lax.top_k(flat, min(config.score.topk, flat.shape[1]))[0]
  finite = jnp.isfinite(top)  # fewer valid pixels than top-k: the mean of those there are
  return jnp.where(finite, top, 0).sum(axis=1) / jnp.maximum(finite.sum(axis=1), 1)


def tile_starts(length, tile, overlap):
  """Starts of tiles of side `tile` covering [0, length), `overlap` px shared by neighbours
  (the last tile ends at the edge)."""
  if tile >= length:
    return [0]
  return list(range(0, length - tile, tile - overlap)) + [length - tile]


def blend_window(tile, overlap, first, last):
  """(tile,) weights of one tile along one axis: 1 inside; on a side shared with a neighbour
  (not `first` / not `last`: the image's own edge) 0 over the outer overlap/4 px, rising
  linearly to 1 at 3 overlap/4. A pixel is taken only from tiles where it lies overlap/4 px or
  more from the tile's inner edge, so the stitched map is exact where a receptive field's
  radius is <= overlap/4, and changes smoothly across seams where it is not."""
  w = np.ones(tile, np.float32)
  if overlap < 4:
    ramp = np.ones(tile, np.float32)
  else:
    ramp = np.clip((np.arange(tile) + 0.5 - overlap / 4) / (overlap / 2), 0.0, 1.0)
  if not first:
    w = np.minimum(w, ramp)
  if not last:
    w = np.minimum(w, ramp[::-1])
  return w.astype(np.float32)


def tiled(fn, x, tile, overlap):
  """fn's outputs on overlapping tiles of x (B, H, W, C), blended -> the outputs at (H, W).

  fn: (B, th, tw, C) -> a pytree of arrays whose axes -3, -2 are the tile's (maps (B, th, tw,
  1), sequences (N, B, th, tw, C)). The tiles run one after another (`lax.scan`), so memory
  is one tile batch's."""
  h, w = x.shape[1:3]
  th, tw = min(tile[0], h), min(tile[1], w)
  ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
  starts, weights = [], []
  for i, y in enumerate(ys):
    for j, x0 in enumerate(xs):
      starts.append((y, x0))
      weights.append(np.outer(blend_window(th, overlap, i == 0, i == len(ys) - 1),
                              blend_window(tw, overlap, j == 0, j == len(xs) - 1)))
  total = np.zeros((h, w), np.float32)
  for (y, x0), wt in zip(starts, weights):
    total[y:y + th, x0:x0 + tw] += wt
  shapes = jax.eval_shape(fn, x[:, :th, :tw])
  acc = jax.tree.map(lambda s: jnp.zeros(s.shape[:-3] + (h, w) + s.shape[-1:], s.dtype),
                     shapes)

  def add(a, o, y, x0, wt):
    at = (0,) * (a.ndim - 3) + (y, x0, 0)
    return jax.lax.dynamic_update_slice(
        a, jax.lax.dynamic_slice(a, at, o.shape) + o * wt[:, :, None].astype(o.dtype), at)

  def body(acc, tile_in):
    (y, x0), wt = tile_in
    part = jax.lax.dynamic_slice(x, (0, y, x0, 0), (x.shape[0], th, tw, x.shape[3]))
    return jax.tree.map(lambda a, o: add(a, o, y, x0, wt), acc, fn(part)), None

  acc, _ = jax.lax.scan(body, acc, (jnp.asarray(np.array(starts, np.int32)),
                                    jnp.asarray(np.stack(weights))))
  return jax.tree.map(lambda a: a / jnp.asarray(total)[:, :, None].astype(a.dtype), acc)


# infer.flips (augment.MODES) -> the flipped copies' axes, beside the image itself
FLIPS = {'': (), 'h': ((2,),), 'v': ((1,),), 'hv': ((2,), (1,), (1, 2))}


def flip_averaged(fn, x, flips, with_sequences):
  """fn(x, with_sequences) -> (raw (B, H, W, 1), extra); with infer.flips ('h', 'v', 'hv')
  the raw map is the mean over x and its left-right / top-bottom / both flips, each map
  flipped back (the sequences are x's own). The flipped copies run as one batch."""
  raw, extra = fn(x, with_sequences)
  if not FLIPS[flips]:
    return raw, extra
  copies = jnp.concatenate([jnp.flip(x, axes) for axes in FLIPS[flips]])
  back = jnp.split(fn(copies, False)[0], len(FLIPS[flips]))
  total = raw + sum(jnp.flip(r, axes) for r, axes in zip(back, FLIPS[flips]))
  return total / (1 + len(FLIPS[flips])), extra


def make_inference(config, with_sequences=False):
  """-> infer(params, images, valid=None), images float (B, H, W, C) in [0, 1] or uint8;
  valid bool (B, H, W): the pixels the image score is taken over (kept-aspect images: not
  the padding; None: all). The maps cover every pixel; metrics and pictures drop the rest.

  Returns {'map': (B, H, W) smoothed anomaly map, 'score': (B,)} and, with_sequences,
  'raw' (B, H, W) the map before smoothing (`rescore`), 'recon' (N, B, H, W, C) and
  'enhanced' (N, B, H, W, C) when the DPN is used; with_sequences='raw': only 'raw' (no
  sequences fetched to the host).
  """
  model = model_lib.from_config(config)
  source = config_lib.score_source(config)
  tile = sizes.as_pair(config.infer.tile) if config.infer.get('tile') else None
  flips = config.infer.get('flips', '')

  def infer(params, images, valid=None):
    chex.assert_rank(images, 4)
    if valid is not None:
      chex.assert_shape(valid, images.shape[:3])
    x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images
    fn = lambda part: flip_averaged(
        lambda y, seqs: crossfit.raw_map(model, params, y, source, seqs, config),
        part, flips, with_sequences is True)
    if tile and (tile[0] < x.shape[1] or tile[1] < x.shape[2]):
      raw, out = tiled(fn, x, tile, config.infer.overlap)
    else:
      raw, out = fn(x)
    smoothed = smooth(raw, config)
    if with_sequences:
      out['raw'] = jnp.squeeze(raw, -1)
    return {**out, 'map': jnp.squeeze(smoothed, -1),
            'score': image_score(smoothed, config, valid)}

  return infer


@functools.lru_cache(maxsize=16)
def _rescorer(config_json):
  config = config_lib.from_json(config_json)

  def fn(raw, valid):
    smoothed = smooth(raw[..., None], config)
    return {'map': smoothed[..., 0], 'score': image_score(smoothed, config, valid)}

  return jax.jit(fn)


def rescore(config, raw, valid=None):
  """Smoothed maps and image scores under config.score from raw maps (B, H, W) (the
  'raw' output), over the `valid` pixels (B, H, W) or all: other score choices without
  running the model again."""
  return jax.device_get(_rescorer(config_lib.program_json(config))(raw, valid))


@functools.lru_cache(maxsize=16)
def _compiled(config_json, with_sequences, mesh, masked):
  fn = make_inference(config_lib.from_json(config_json), with_sequences)
  batch = parallel.NamedSharding(mesh, parallel.P(parallel.AXIS))
  return jax.jit(fn, in_shardings=(parallel.NamedSharding(mesh, parallel.P()), batch)
                 + ((batch,) if masked else ()))


def compiled(config, mesh, with_sequences=False, masked=False):
  """The jitted inference over `mesh` (cached per config, mode and mesh); masked: it takes
  `valid` (B, H, W) as its third argument."""
  return _compiled(config_lib.program_json(config), with_sequences, mesh, masked)


def default_mesh():
  """Every device this process drives: evaluation is data-parallel like training."""
  return parallel.make_mesh(jax.local_devices())


def batches(config, params, images, with_sequences=False, batch_size=None, mesh=None,
            valid=None):
  """Yields (indices, outputs) over `images` (uint8 (N, H, W, C), an array or a lazy view)
  batch by batch, outputs as numpy with the padding dropped: host memory holds one batch.
  valid: bool (N, H, W) (or a `sizes.Valid` view), the pixels each image score is taken over.

  The batch is config.eval_batch_size (or batch_size) rounded up to a multiple of the
  mesh's devices; results do not depend on it beyond float rounding.
  """
  if not len(images):
    raise ValueError('no images to run inference on')
  if valid is not None and len(valid) != len(images):
    raise ValueError(f'valid: {len(valid)} masks for {len(images)} images')
  mesh = mesh or default_mesh()
  fn = compiled(config, mesh, with_sequences, masked=valid is not None)
  n_dev = mesh.devices.size
  bs = -(-(batch_size or config.eval_batch_size) // n_dev) * n_dev
  params = parallel.replicate(params, mesh)
  pending = None

  def fetch(job):  # the host copy of a finished batch, its padding dropped
    out, idx = jax.device_get(job[0]), job[1]
    return idx, {k: np.take(v, np.arange(len(idx)), axis=_batch_axis(k)) for k, v in out.items()}

  def placed(a, n):  # padded to the batch; placed explicitly: with several processes jit
    # refuses sharded numpy inputs (this mesh holds only this process's devices)
    if n < bs:
      a = np.concatenate([a, np.repeat(a[-1:], bs - n, axis=0)])
    return jax.device_put(a, parallel.NamedSharding(mesh, parallel.P(parallel.AXIS)))

  for start in range(0, len(images), bs):
    idx = np.arange(start, min(len(images), start + bs))
    args = [placed(np.asarray(images[start:start + bs]), len(idx))]
    if valid is not None:
      args.append(placed(np.asarray(valid[start:start + bs], bool), len(idx)))
    job = (fn(params, *args), idx)  # dispatched before the previous batch is fetched
    if pending:
      yield fetch(pending)
    pending = job
  yield fetch(pending)


def run(config, params, images, with_sequences=False, batch_size=None, mesh=None, valid=None):
  """images uint8 (N, H, W, C) -> dict of numpy arrays over all images (see
  `make_inference`); `batches` streams them instead."""
  outs = [o for _, o in batches(config, params, images, with_sequences, batch_size, mesh,
                                valid)]
  return {k: np.concatenate([o[k] for o in outs], axis=_batch_axis(k)) for k in outs[0]}


def _batch_axis(key):
  return 1 if key in SEQUENCES else 0
