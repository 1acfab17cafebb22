"""What the held-out normal training images are for (never test labels): the decision
threshold, and a validation score for model selection on pseudo-anomalies."""
import pathlib

import jax
import numpy as np

from rcae_jax import anomalies, files, inference, metrics, suppression
from rcae_jax import config as config_lib


def calibrate(workdir, config, params, val_images):
  """Writes <workdir>/calibration.json: threshold = quantile of held-out normal scores."""
  path = pathlib.Path(workdir) / 'calibration.json'
  if not len(val_images):
    files.write_json(path, {'threshold': None, 'n_val': 0,
                            'why': 'data.val_fraction = 0: no held-out normal images'})
    return None
  scores = inference.run(config, params, val_images)['score']
  q = config.score.threshold_quantile
  info = {'threshold': np.quantile(scores, q, axis=-1).tolist(), 'quantile': q,
          'n_val': len(val_images), 'val_score_mean': scores.mean(axis=-1).tolist(),
          'val_score_std': scores.std(axis=-1).tolist(), 'val_score_max': scores.max(axis=-1).tolist()}
  files.write_json(path, info)
  return info


def validation_set(config, val_images, seed=0):
  """Held-out normals plus one pseudo-anomalous copy of each: (images uint8, masks bool).

  Every shape and filler is used, whatever the run trained on, with a texture bank cropped
  with another seed, so runs that differ in their training pseudo-anomalies are compared on
  the same set.
  """
  res, ch = config.data.resolution, config.data.channels
  textures = anomalies.texture_bank(res, ch, seed=seed + 1)
  x = val_images.astype(np.float32) / 255.0
  fn = lambda k, img, other: anomalies.synthesize(k, img, other, textures, p_clean=0.0)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(x))
  bad, mask = jax.jit(jax.vmap(fn))(keys, x, np.roll(x, 1, axis=0))
  bad = np.round(np.asarray(bad) * 255.0).astype(np.uint8)
  images = np.concatenate([val_images, bad])
  masks = np.concatenate([np.zeros(mask.shape[:3], bool), np.asarray(mask)[..., 0] > 0.5])
  return images, masks


BORDER_PX = 8  # "near the border" for border_share


def validate(workdir, config, params, val_images, write=True):
  """The test metrics on `validation_set`, the per-depth suppression of the planted defects
  (`rcae_jax.suppression`) and the border share of normal maxima -> validation.json."""
  if not len(val_images):
    return None
  images, masks = validation_set(config, val_images, config.data.seed)
  labels = masks.reshape(len(masks), -1).any(axis=1)
  supp, rec_out = suppression_of(config, params, images,
                                 np.concatenate([val_images, val_images]), labels, masks)
  # without a CRD the configured score is the reconstruction's: one inference serves both
  same = config_lib.score_source(config) == supp['recon_source']
  out = rec_out if same else inference.run(config, params, images)
  info = {'n_images': len(images),
          'metrics': metrics.compute_metrics(out['score'], labels, out['map'], masks),
          'suppression': supp,
          'border_share': border_share(out['map'][~labels]), 'border_px': BORDER_PX}
  if write:
    files.write_json(pathlib.Path(workdir) / 'validation.json', info)
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
  """The reconstruction a no-CRD detector scores: D_n when a DPN is trained, else R_n."""
  return 'dpn' if 2 in config.stages else 'rcae'


def suppression_of(config, params, images, clean, labels, masks):
  """-> (suppression, inference output): residual/normal error of R_n (and D_n) per depth,
  and the validation metrics of the reconstruction-error map alone (the paper's
  "+RcAE"/"+DPN" detectors); the output has the sequences, map and score it came from."""
  src = recon_source(config)
  rec_cfg = config_lib.apply_overrides(config, [f'score.source={src}'])
  out = inference.run(rec_cfg, params, images, with_sequences=True)
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
  return entry, out


def load(workdir):
  path = pathlib.Path(workdir) / 'calibration.json'
  return files.json.loads(path.read_text()) if path.exists() else {'threshold': None}
