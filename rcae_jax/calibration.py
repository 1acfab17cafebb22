"""What the held-out normal training images are for (never test labels): the decision
threshold, and a validation score for model selection on pseudo-anomalies."""
import pathlib

import jax
import numpy as np

from rcae_jax import anomalies, files, inference, metrics


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


def validate(workdir, config, params, val_images, write=True):
  """The test metrics on `validation_set` (a list of them when K > 1) -> validation.json."""
  if not len(val_images):
    return None
  images, masks = validation_set(config, val_images, config.data.seed)
  out = inference.run(config, params, images)
  maps, scores = out['map'], out['score']
  if config.num_models == 1:
    maps, scores = maps[None], scores[None]
  labels = masks.reshape(len(masks), -1).any(axis=1)
  per_model = [metrics.compute_metrics(s, labels, m, masks) for s, m in zip(scores, maps)]
  info = {'n_images': len(images), 'metrics': per_model[0] if config.num_models == 1 else per_model}
  if write:
    files.write_json(pathlib.Path(workdir) / 'validation.json', info)
  return info


def load(workdir):
  path = pathlib.Path(workdir) / 'calibration.json'
  return files.json.loads(path.read_text()) if path.exists() else {'threshold': None}
