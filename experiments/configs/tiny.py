"""Tiny config for tests and CI: 32² images, N = 3, a few hundred steps on 2 CPU cores."""
from rcae_jax import base_config as base


def get_config():
  c = base.get_config()
  c.data.size = (32, 32)
  c.model.features = 16
  c.model.depth = 3
  c.model.groups = 4
  c.model.dpn_features = 8
  c.model.crd_features = 8
  c.batch_size = 8
  c.stage1.steps, c.stage2.steps, c.stage3.steps = 150, 60, 150
  c.stage1.lr = c.stage2.lr = c.stage3.lr = 2e-3
  c.log_every = 10
  c.ckpt_every = 50
  return c
