"""Validation for model selection, from held-out normal training images only: the test
metrics on those images plus a pseudo-anomalous copy of each, how much of each planted
defect survives in R_n and D_n (`rcae_jax.suppression`), and where normal maps peak."""

import functools

import jax
import numpy as np

from rcae_jax import anomalies, crossfit, files, inference, methods, metrics, sizes
from rcae_jax import suppression
from rcae_jax import config as config_lib

BORDER_PX = 8  # "near the border" for border_share
# The validation generator, fixed whatever a run trained on: every shape and filler, a
# third of the shapes on a border, faint pastes unlabelled (anomalies.synthesize).
GENERATOR = dict(min_opacity=0.3, max_size=0.3, edge=0.3, visible=0.08)
# Image score / map smoothing pairs compared on validation (`score_choices`).
SCORE_CHOICES = {
    'gaussian, max': ['score.smoothing=gaussian', 'score.image=max'],
    'gaussian, top-k mean': ['score.smoothing=gaussian', 'score.image=topk'],
    'mean filter, max': ['score.smoothing=mean', 'score.image=max'],
    'mean filter, top-k mean': ['score.smoothing=mean', 'score.image=topk'],
}


PLANT_CHUNK = 8


@functools.lru_cache(maxsize=8)
def _planter(shapes, fillers):
  """The jitted planting of one batch's pseudo-anomalies (one program per families, traced
  once per process however many runs validate)."""
  return jax.jit(jax.vmap(
      lambda k, img, other, textures: anomalies.synthesize(
          k, img / 255.0, other / 255.0, textures, shapes=shapes, fillers=fillers,
          p_clean=0.0, **GENERATOR), in_axes=(0, 0, 0, None)))


def validation_batches(config, val_images, seed=0, families=(), valid=None):
  """Yields (indices, images uint8, masks bool, clean uint8) over the validation set: the
  held-out normals (indices 0..n-1), then one pseudo-anomalous copy of each (n..2n-1), in
  batches of eval_batch_size; `clean` is the image before any defect was planted.

  Every shape and filler is used (`GENERATOR`), whatever the run trained on, with a texture
  bank cropped with another seed, so runs that differ in their training pseudo-anomalies are
  compared on the same set; `families` (shape and filler names) draws only those shapes
  (or every shape if none is named) and those fillers (likewise): the families the CRD
  never saw (`crd_anomaly.holdout`). Copy i takes image i-1 as its
  `other` source and key i of one split: the set is a function of the images alone,
  whatever the batch size. valid (kept-aspect images): what is planted in the padding is
  taken out again, so every defect pixel is image.
  """
  res, ch = sizes.image_size(config), config.data.channels
  n = len(val_images)
  bs = min(config.eval_batch_size, n)
  for start in range(0, n, bs):
    idx = np.arange(start, min(n, start + bs))
    x = np.asarray(val_images[idx])
    yield idx, x, np.zeros((len(idx),) + res, bool), x
  textures = anomalies.texture_bank(res, ch, seed=seed + 1, procedural=16)
  keys = jax.random.split(jax.random.PRNGKey(seed), n)
  shapes = tuple(f for f in families if f in anomalies.SHAPES) or tuple(anomalies.SHAPES)
  fillers = tuple(f for f in families if f in anomalies.FILLERS) or tuple(anomalies.FILLERS)
  fn, keys = _planter(shapes, fillers), np.asarray(keys)
  for start in range(0, n, bs):
    idx = np.arange(start, min(n, start + bs))
    clean, planted = [], []
    # planted PLANT_CHUNK at a time, the last chunk padded: one program per image size,
    # whatever the batch size or the number of held-out images (its compilation, every
    # shape and filler at once, is the costliest of a validation); every chunk is
    # dispatched before any is fetched
    for c in range(0, len(idx), PLANT_CHUNK):
      part = idx[c:c + PLANT_CHUNK]
      pad = np.r_[part, np.full(PLANT_CHUNK - len(part), part[-1])]
      imgs = np.asarray(val_images[pad])
      clean.append(imgs[:len(part)])
      planted.append(fn(keys[pad], imgs.astype(np.float32),
                        np.asarray(val_images[pad - 1]).astype(np.float32), textures))
    k = len(idx)
    x = np.concatenate(clean)
    bad = np.concatenate([np.asarray(b[:len(cl)]) for cl, (b, _) in zip(clean, planted)])
    mask = np.concatenate([np.asarray(m[:len(cl)]) for cl, (_, m) in zip(clean, planted)])
    bad = np.round(bad * 255.0).astype(np.uint8)
    mask = mask[..., 0] > 0.5
    if valid is not None:
      inside = np.asarray(valid[idx], bool)
      bad, mask = np.where(inside[..., None], bad, x[:k]), mask & inside
    yield n + idx, bad, mask, x[:k]


def validation_set(config, val_images, seed=0, families=(), valid=None):
  """The whole validation set: (images uint8 (2n, ...), masks bool (2n, H, W))."""
  parts = list(validation_batches(config, val_images, seed, families, valid))
  return (np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))


class _Scored:
  """Image scores, labels and pixel curves (or maps) of one detector over the batches."""

  def __init__(self, n, bits):
    self.scores, self.labels = np.empty(n), np.empty(n, bool)
    self.bits = bits
    self.curves = metrics.PixelCurves(bits) if bits else None
    self.maps, self.masks, self.valid = [], [], []
    self.near, self.normal = 0, 0

  def add(self, idx, out, masks, valid=None):
    labels = masks.reshape(len(masks), -1).any(axis=1)
    self.scores[idx], self.labels[idx] = out['score'], labels
    if self.curves is not None:
      self.curves.add(out['map'], masks, valid)
    else:
      self.maps.append(out['map'])
      self.masks.append(masks)
      self.valid.append(valid)
    self.near += border_count(out['map'][~labels],
                              valid=None if valid is None else valid[~labels])
    self.normal += int((~labels).sum())

  def metrics(self):
    if self.curves is not None:
      return metrics.streamed_metrics(self.scores, self.labels, self.curves)
    valid = None if self.valid[0] is None else np.concatenate(self.valid)
    return metrics.compute_metrics(self.scores, self.labels, np.concatenate(self.maps),
                                   np.concatenate(self.masks), valid)

  def border_share(self):
    return self.near / self.normal if self.normal else float('nan')


def run(ctx):
  """-> validation.json's content: {'n_images', 'metrics', 'suppression', 'border_share',
  'border_px', 'score_choices', 'normal_gap'} and, with crd_anomaly.holdout, 'holdout',
  cross-fitted, 'crossfit_infer'; None without held-out images. Reads the saved file when ctx.reuse_saved.

  Streamed batch by batch (host memory holds one batch and the histograms): the configured
  detector, and the reconstruction-error detector with its suppression per depth;
  `score_choices`: the detector's metrics under each image score / smoothing of
  SCORE_CHOICES (the one to configure is picked here, never on the test set); `holdout`:
  the detector's metrics on a set drawn from the family the CRD never saw."""
  path = ctx.workdir / 'validation.json'
  if ctx.reuse_saved and path.exists():
    return files.read_json(path)
  val_images, config = ctx.dataset.val, ctx.config
  if not len(val_images):
    return None
  src = recon_source(config)  # None: the method has no reconstruction to score
  rec_cfg = src and config_lib.apply_overrides(config, [f'score.source={src}'])
  shared = src is not None and config_lib.score_source(config) == src  # one pass serves both
  choices = {name: config_lib.apply_overrides(config, ov) for name, ov in SCORE_CHOICES.items()}
  n, bits = 2 * len(val_images), config.get('eval_pixel_bits', 0)
  detector, recon = _Scored(n, bits), _Scored(n, bits)
  chosen = {name: _Scored(n, bits) for name in choices}
  supp = {'R': None, 'D': None}
  val_valid = ctx.dataset.val_valid
  for idx, images, masks, clean in validation_batches(config, val_images, config.data.seed,
                                                      valid=val_valid):
    valid = _valid_at(val_valid, idx)
    if rec_cfg:
      out = inference.run(rec_cfg, ctx.params, images, with_sequences=True, valid=valid)
      x, c = images.astype(np.float32) / 255.0, clean.astype(np.float32) / 255.0
      untouched = (images == clean).all(-1)
      for name, key in (('R', 'recon'), ('D', 'enhanced')):
        if key in out:
          supp[name] = suppression.add(supp[name], suppression.sums(out[key], x, c, untouched))
      recon.add(idx, out, masks, valid)
    det = out if shared else inference.run(config, ctx.params, images, with_sequences='raw',
                                           valid=valid)
    detector.add(idx, det, masks, valid)
    for name, cfg in choices.items():
      chosen[name].add(idx, inference.rescore(cfg, det['raw'], valid), masks, valid)
  entry = {'visible_threshold': suppression.VISIBLE, 'recon_source': src}
  for name, total in supp.items():
    if total is not None:
      m = suppression.finish(total)
      entry[f'residual_{name}'] = m['residual']
      entry[f'normal_error_{name}'] = m['normal_error']
  if rec_cfg:
    entry.update({f'recon_{m}': v for m, v in recon.metrics().items() if m != 'bounds'})
  info = {'n_images': n, 'metrics': detector.metrics(), 'suppression': entry,
          'border_share': detector.border_share(), 'border_px': BORDER_PX,
          'border_share_uniform': uniform_border_share(sizes.image_size(config)),
          'score_choices': {name: {**_plain(sc.metrics()), 'border_share': sc.border_share()}
                            for name, sc in chosen.items()}}
  info['normal_gap'] = normal_gap(ctx)
  holdout = methods.holdout(config)
  if holdout:
    held = _Scored(n, bits)
    for idx, images, masks, _ in validation_batches(config, val_images, config.data.seed,
                                                    holdout, val_valid):
      valid = _valid_at(val_valid, idx)
      held.add(idx, inference.run(config, ctx.params, images, valid=valid), masks, valid)
    info['holdout'] = {'families': list(holdout), 'metrics': _plain(held.metrics())}
  if crossfit.folds(config) and 'folds' in ctx.params:
    info['crossfit_infer'] = _infer_modes(ctx, info['metrics'])
  if ctx.write and ctx.is_main:
    files.write_json(path, info)
    print('validation (held-out normals + pseudo-anomalies): ' + ', '.join(
        f'{k} {info["metrics"][k]:.1f}' for k in metrics.METRICS), flush=True)
    if holdout:
      print(f'validation on the held-out families {holdout} only: ' + ', '.join(
          f'{k} {info["holdout"]["metrics"][k]:.1f}' for k in metrics.METRICS), flush=True)
  return info


def _infer_modes(ctx, configured):
  """A cross-fitted run's detector metrics on the same validation set under each
  crossfit.infer ('full': the first-level networks trained on every image; 'folds': the K
  fold models, maps averaged), so the choice between them is made here, not on test."""
  config, out = ctx.config, {}
  n, bits = 2 * len(ctx.dataset.val), config.get('eval_pixel_bits', 0)
  for mode in crossfit.INFER:
    if mode == config.crossfit.infer:
      out[mode] = _plain(configured)
      continue
    cfg = config_lib.apply_overrides(config, [f'crossfit.infer={mode}'])
    scored = _Scored(n, bits)
    val_valid = ctx.dataset.val_valid
    for idx, images, masks, _ in validation_batches(cfg, ctx.dataset.val, config.data.seed,
                                                    valid=val_valid):
      valid = _valid_at(val_valid, idx)
      scored.add(idx, inference.run(cfg, ctx.params, images, valid=valid), masks, valid)
    out[mode] = _plain(scored.metrics())
  return out


MAX_GAP_TRAIN = 512  # training normals scored for normal_gap (evenly spaced beyond this)


def _set_stats(scores, map_p99):
  return {'n': int(len(scores)), 'score_median': float(np.median(scores)),
          'score_p99': float(np.percentile(scores, 99)),
          'map_p99_median': float(np.median(map_p99)),
          'map_p99_p99': float(np.percentile(map_p99, 99))}


def gap(train_scores, train_map_p99, held_scores, held_map_p99):
  """How differently the model judges normal images it trained on and held-out ones:
  {'train', 'heldout'}: median and 99th percentile of the image scores and of the per-image
  map 99th percentiles; 'ratio': each held-out / train; 'ratio_p99': that of the image
  scores' 99th percentile; 'ks': the two-sample Kolmogorov-Smirnov statistic of the image
  scores (0: one distribution; 1: no overlap). A detector that judges an unseen normal image
  as it judges its training images has ratios near 1 and a small KS."""
  train, held = _set_stats(train_scores, train_map_p99), _set_stats(held_scores, held_map_p99)
  ratio = {k: held[k] / train[k] if train[k] else float('inf') for k in train if k != 'n'}
  import scipy.stats  # pylint: disable=g-import-not-at-top  (1.2 s at import; once per run)
  ks = float(scipy.stats.ks_2samp(np.asarray(train_scores), np.asarray(held_scores)).statistic)
  return {'train': train, 'heldout': held, 'ratio': ratio, 'ratio_p99': ratio['score_p99'],
          'ks': ks}


def _valid_at(valid, idx):
  """The validation batch `idx`'s valid pixels (copy n + i is image i's), or None."""
  return None if valid is None else np.asarray(valid[np.asarray(idx) % len(valid)], bool)


def _scores_and_p99(ctx, images, valid, params=None, config=None):
  scores, p99 = np.empty(len(images)), np.empty(len(images))
  stream = (ctx.stream(images, valid=valid) if params is None else
            inference.batches(config or ctx.config, params, images, valid=valid))
  for idx, out in stream:
    scores[idx] = out['score']
    if valid is None:
      p99[idx] = np.percentile(out['map'].reshape(len(idx), -1), 99, axis=1)
    else:
      inside = np.asarray(valid[idx], bool)
      p99[idx] = [np.percentile(m[v], 99) for m, v in zip(out['map'], inside)]
  return scores, p99


def _out_of_fold(ctx, images, valid, pick):
  """Scores and map p99s of training images `pick` as the cross-fitted learner saw them in
  training: through the first-level networks of each image's own fold."""
  fold_of = np.asarray(files.read_json(ctx.workdir / 'crossfit.json')['fold_of_image'])[pick]
  full = config_lib.apply_overrides(ctx.config, ['crossfit.infer=full'])
  scores, p99 = np.empty(len(pick)), np.empty(len(pick))
  for f in np.unique(fold_of):
    at = np.flatnonzero(fold_of == f)
    scores[at], p99[at] = _scores_and_p99(ctx, images[at], subset(valid, at),
                                          crossfit.of_fold(ctx.params, int(f)), full)
  return scores, p99


def normal_gap(ctx):
  """`gap` between the training normals (up to MAX_GAP_TRAIN, evenly spaced) and the
  held-out normals, scored by the run's detector. Cross-fitted, the training normals are
  scored as the learner saw them (each through its own fold's networks): the gap is then
  between the learner's training inputs and held-out ones, what cross-fitting is meant to
  close ('train_scored_by')."""
  ds = ctx.dataset
  pick = evenly_spaced(len(ds.train), MAX_GAP_TRAIN)
  images, valid = np.asarray(ds.train[pick]), subset(ds.train_valid, pick)
  held = _scores_and_p99(ctx, ds.val, ds.val_valid)
  if crossfit.folds(ctx.config) and 'folds' in ctx.params:
    out = gap(*_out_of_fold(ctx, images, valid, pick), *held)
    return {**out, 'train_scored_by': 'each image\'s out-of-fold networks (as the learner '
                                      'saw it in training)'}
  return {**gap(*_scores_and_p99(ctx, images, valid), *held),
          'train_scored_by': 'the run\'s networks'}


def evenly_spaced(n, most):
  """Indices of at most `most` of n items, evenly spaced (all of them when n <= most)."""
  return np.unique(np.linspace(0, n - 1, min(n, most)).astype(int))


def subset(valid, at):
  """`valid` (a `sizes.Valid` view or None) of the images `at`."""
  return None if valid is None else valid.subset(at)


def _plain(m):
  return {k: v for k, v in m.items() if k != 'bounds'}


def border_count(normal_maps, width=BORDER_PX, valid=None):
  """How many of these normal maps have their maximum within `width` px of the border (of
  the image: with kept-aspect `valid` (N, H, W), of its content box, the padding left out)."""
  if not len(normal_maps):
    return 0
  n, h, w = normal_maps.shape
  top, left, bottom, right = np.zeros(n), np.zeros(n), np.full(n, h), np.full(n, w)
  if valid is not None:
    rows, cols = valid.any(axis=2), valid.any(axis=1)
    top, left = rows.argmax(axis=1), cols.argmax(axis=1)
    bottom, right = h - rows[:, ::-1].argmax(axis=1), w - cols[:, ::-1].argmax(axis=1)
    normal_maps = np.where(valid, normal_maps, -np.inf)
  flat = normal_maps.reshape(n, -1).argmax(axis=1)
  y, x = flat // w, flat % w
  return int(((y < top + width) | (y >= bottom - width) | (x < left + width)
              | (x >= right - width)).sum())


def uniform_border_share(size, width=BORDER_PX):
  """The border share of maps with no preferred place: the border band's share of an
  (h, w) image (an int: a square), 1 - (1 - 2 width / h)(1 - 2 width / w) (0.44 at 64², 0.23
  at 128², 0.12 at 256²)."""
  h, w = sizes.as_pair(size)
  return 1 - max(0.0, 1 - 2 * width / h) * max(0.0, 1 - 2 * width / w)


def border_share(normal_maps, width=BORDER_PX):
  """Share of normal images whose map maximum lies within `width` px of the image border:
  a detector that fires on image edges (padding, tile borders) sets its normal scores there.
  A map with no preferred place scores about 1 - (1 - 2 width / side)²."""
  if not len(normal_maps):
    return float('nan')
  return border_count(normal_maps, width) / len(normal_maps)


def recon_source(config):
  """The reconstruction a no-CRD detector scores (`methods.recon_source`: RcAE's D_n when
  a DPN is trained, else R_n; FAE's one restoration)."""
  return methods.recon_source(config)
