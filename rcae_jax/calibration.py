"""Decision thresholds from held-out normal training images only (never test labels)."""
import pathlib

import numpy as np

from rcae_jax import files, inference


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


def load(workdir):
  path = pathlib.Path(workdir) / 'calibration.json'
  return files.json.loads(path.read_text()) if path.exists() else {'threshold': None}
