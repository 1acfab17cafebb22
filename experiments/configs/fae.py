"""FAE (Filtering Autoencoder) on the data and budget of another shipped config.

`--config fae` (on base.py), `--config fae:mtd`, `--config fae:mtd:cpu`: the named config's
data, resolution, batch and learning rate, with method = 'fae' trained in one stage for as
many optimizer steps as that config's RcAE stages together (the same budget), a U-Net whose
first level has as many channels as the RcAE's levels, and FAE's training objective
(corrupted input, clean target, identity noise on both, region-balanced loss).
"""
import importlib


def to_fae(c):
  """Turns an RcAE config into FAE on the same data and budget (in place; returns it)."""
  steps = [c[f'stage{s}'].steps for s in c.stages]
  if all(steps):
    c.stage1.steps = sum(steps)
  else:
    c.stage1.epochs = sum(c[f'stage{s}'].epochs for s in c.stages)
  c.method = 'fae'
  c.stages = (1,)
  c.stage1.restore, c.stage1.noise, c.stage1.region_weight = True, 0.04, 1.0
  c.fae.features = c.model.features
  c.score.source = 'auto'
  return c


def get_config(arg=''):
  name, _, sub = arg.partition(':')
  module = importlib.import_module(f'experiments.configs.{name or "base"}')
  return to_fae(module.get_config(sub) if sub else module.get_config())
