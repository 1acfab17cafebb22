"""Demo config: the built-in textures at 64², N = 3; about 10 minutes on 2 CPU cores."""
from rcae_jax import base_config as base


def get_config():
  c = base.get_config()
  c.data.size = (64, 64)
  c.model.features = 16
  c.model.groups = 4
  c.model.depth = 3
  c.model.dpn_features = 8
  c.model.crd_features = 8
  c.batch_size = 16
  c.stage1.steps, c.stage2.steps, c.stage3.steps = 500, 150, 400
  c.stage1.lr = c.stage2.lr = c.stage3.lr = 1e-3
  c.log_every = 20
  c.ckpt_every = 200
  return c
