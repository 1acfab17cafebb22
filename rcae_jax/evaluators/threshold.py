"""The decision threshold, from held-out normal training images (never test labels)."""
import pathlib

import numpy as np

from rcae_jax import files


def run(ctx):
  """Writes calibration.json: threshold = the score.threshold_quantile of held-out normal
  scores."""
  path = ctx.workdir / 'calibration.json'
  val_images = ctx.dataset.val
  if not len(val_images):
    info = {'threshold': None, 'n_val': 0,
            'why': 'data.val_fraction = 0: no held-out normal images'}
  else:
    scores = ctx.scores('val', val_images)
    q = ctx.config.score.threshold_quantile
    info = {'threshold': float(np.quantile(scores, q)), 'quantile': q,
            'n_val': len(val_images), 'val_score_mean': float(scores.mean()),
            'val_score_std': float(scores.std()), 'val_score_max': float(scores.max())}
  if ctx.write and ctx.is_main:
    files.write_json(path, info)
  return info


def load(workdir):
  """The saved calibration of a run ({'threshold': None} when there is none)."""
  path = pathlib.Path(workdir) / 'calibration.json'
  return files.read_json(path) if path.exists() else {'threshold': None}
