"""FAE (Filtering Autoencoder) on the data and budget of another shipped config.

`--config fae` (on base.py), `--config fae:mtd`, `--config fae:mtd:cpu`: the named config's
data, resolution, batch and learning rate, with method = 'fae' trained in one stage (`fae.*`) for
as many optimizer steps as that config's RcAE stages together (the same budget), a U-Net whose
first level has as many channels as the RcAE's levels, and FAE's training objective
(corrupted input, clean target, identity noise on both, region-balanced loss).
"""


def to_fae(c):
  """Turns an RcAE config into FAE on the same data and budget (in place; returns it): the
  RcAE stages' steps (or epochs) summed, stage 1's learning rate, schedule and
  augmentation."""
  steps = [c[f'stage{s}'].steps for s in c.stages]
  if all(steps):
    c.fae.steps = sum(steps)
  else:
    c.fae.steps, c.fae.epochs = 0, sum(c[f'stage{s}'].epochs for s in c.stages)
  c.method = 'fae'
  c.stages = (1,)
  for key in ('lr', 'schedule', 'flip', 'jitter'):
    c.fae[key] = c.stage1[key]
  c.fae.restore, c.fae.noise, c.fae.region_weight = True, 0.04, 1.0
  c.fae.features = c.model.features
  c.score.source = 'auto'
  return c


def get_config(arg=''):
  from rcae_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  return to_fae(config_lib.load_config(arg or 'base'))
