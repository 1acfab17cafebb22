"""Validation for model selection, from held-out normal training images only: the test
metrics on those images plus a pseudo-anomalous copy of each, how much of each planted
defect survives in R_n and D_n (`rcae_jax.suppression`), and where normal maps peak."""

import jax
import numpy as np

from rcae_jax import anomalies, files, metrics, suppression
from rcae_jax import config as config_lib

BORDER_PX = 8  # "near the border" for border_share


def validation_set(config, val_images, seed=0):
  """Held-out normals plus one pseudo-anomalous copy of each: (images uint8, masks bool).

  Every shape and filler is used, whatever the run trained on, with a texture bank cropped
  with another seed, so runs that differ in their training pseudo-anomalies are compared on
  the same set. Image i's copy takes image i-1 as its `other` source and key i of one split,
  and is built in batches of eval_batch_size (the set is a function of the images alone).
  """
  res, ch = config.data.resolution, config.data.channels
  textures = anomalies.texture_bank(res, ch, seed=seed + 1)
  n, bs = len(val_images), config.eval_batch_size
  keys = jax.random.split(jax.random.PRNGKey(seed), n)
  fn = jax.jit(jax.vmap(
      lambda k, img, other: anomalies.synthesize(k, img / 255.0, other / 255.0, textures,
                                                 p_clean=0.0)))
  images = np.empty((2 * n, res, res, ch), np.uint8)
  masks = np.zeros((2 * n, res, res), bool)
  for start in range(0, n, bs):
    idx = np.arange(start, min(n, start + bs))
    x = np.asarray(val_images[idx])
    bad, mask = fn(keys[idx], x.astype(np.float32), np.asarray(val_images[idx - 1]).astype(
        np.float32))
    images[idx], images[n + idx] = x, np.round(np.asarray(bad) * 255.0).astype(np.uint8)
    masks[n + idx] = np.asarray(mask)[..., 0] > 0.5
  return images, masks


def run(ctx):
  """-> validation.json's content: {'n_images', 'metrics', 'suppression', 'border_share',
  'border_px'}; None without held-out images. Reads the saved file when ctx.reuse_saved."""
  path = ctx.workdir / 'validation.json'
  if ctx.reuse_saved and path.exists():
    return files.read_json(path)
  val_images, config = ctx.dataset.val, ctx.config
  if not len(val_images):
    return None
  images, masks = validation_set(config, val_images, config.data.seed)
  labels = masks.reshape(len(masks), -1).any(axis=1)
  clean = np.concatenate([images[:len(val_images)]] * 2)
  supp, rec_cfg = suppression_of(ctx, images, clean, labels, masks)
  # without a CRD the configured score is the reconstruction's: the memoised inference
  # suppression_of ran serves both
  out = ctx.infer('val+planted', images, with_sequences=rec_cfg is config)
  info = {'n_images': len(images),
          'metrics': metrics.compute_metrics(out['score'], labels, out['map'], masks),
          'suppression': supp,
          'border_share': border_share(out['map'][~labels]), 'border_px': BORDER_PX}
  if ctx.write and ctx.is_main:
    files.write_json(path, info)
    print('validation (held-out normals + pseudo-anomalies): ' + ', '.join(
        f'{k} {v:.1f}' for k, v in info['metrics'].items()), flush=True)
  return info


def border_share(normal_maps, width=BORDER_PX):
  """Share of normal images whose map maximum lies within `width` px of the image border:
  a detector that fires on image edges (padding, tile borders) sets its normal scores there.
  A map with no preferred place scores about 1 - (1 - 2 width / side)²."""
  if not len(normal_maps):
    return float('nan')
  n, h, w = normal_maps.shape
  flat = normal_maps.reshape(n, -1).argmax(axis=1)
  y, x = flat // w, flat % w
  near = (y < width) | (y >= h - width) | (x < width) | (x >= w - width)
  return float(near.mean())


def recon_source(config):
  """The reconstruction a no-CRD detector scores: D_n when a DPN is trained, else R_n
  (FAE: its one restoration)."""
  if config_lib.method(config) == 'fae':
    return 'fae'
  return 'dpn' if 2 in config.stages else 'rcae'


def suppression_of(ctx, images, clean, labels, masks):
  """-> (suppression, the config scoring the reconstruction): residual and normal error of
  R_n (and D_n) per depth, and the validation metrics of the reconstruction-error map alone
  (the paper's "+RcAE"/"+DPN" detectors)."""
  src = recon_source(ctx.config)
  rec_cfg = config_lib.apply_overrides(ctx.config, [f'score.source={src}'])
  if config_lib.score_source(ctx.config) == src:
    rec_cfg = ctx.config  # the same computation: share its memoised inference
  out = ctx.infer('val+planted', images, rec_cfg, with_sequences=True)
  x = images.astype(np.float32) / 255.0
  c = clean.astype(np.float32) / 255.0
  untouched = (images == clean).all(-1)
  entry = {'visible_threshold': suppression.VISIBLE, 'recon_source': src}
  for name, key in (('R', 'recon'), ('D', 'enhanced')):
    if key in out:
      m = suppression.measure(out[key], x, c, untouched)
      entry[f'residual_{name}'] = m['residual']
      entry[f'normal_error_{name}'] = m['normal_error']
  rec = metrics.compute_metrics(out['score'], labels, out['map'], masks)
  entry.update({f'recon_{m}': v for m, v in rec.items()})
  return entry, rec_cfg
