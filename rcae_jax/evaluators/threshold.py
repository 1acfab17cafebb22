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
    info = {'threshold': None, 'n_val': 0, 'why': no_heldout_reason(ctx.config, ctx.dataset)}
  else:
    scores = ctx.scores('val', val_images, ctx.dataset.val_valid)
    q = ctx.config.score.threshold_quantile
    info = {'threshold': float(np.quantile(scores, q)), 'quantile': q,
            'n_val': len(val_images), 'val_score_mean': float(scores.mean()),
            'val_score_std': float(scores.std()), 'val_score_max': float(scores.max())}
  if ctx.write and ctx.is_main:
    files.write_json(path, info)
  return info


def no_heldout_reason(config, dataset):
  """Why a run has no held-out normal images, and how to get some."""
  vf = config.data.val_fraction
  if vf == 0:
    return 'data.val_fraction = 0: no held-out normal images; set it > 0 (e.g. 0.1)'
  n = len(dataset.train) + len(dataset.val)
  return (f'only {n} normal training image{"s" if n != 1 else ""}: data.val_fraction={vf} '
          f'holds out none (a held-out set needs at least 2 training images, and a threshold '
          f'a few held-out ones); add normal images to the training folder')


def load(workdir):
  """The saved calibration of a run ({'threshold': None} when there is none)."""
  path = pathlib.Path(workdir) / 'calibration.json'
  return files.read_json(path) if path.exists() else {'threshold': None}
