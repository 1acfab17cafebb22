"""The paper's setting: 1024², N = 5, Adam 1e-4, 1500/400/300 epochs."""
from rcae_jax import base_config as base


def get_config():
  c = base.get_config()
  c.data.size = (1024, 1024)
  c.model.depth = 5
  c.batch_size = 8
  c.model.crd_loss = 'l2'       # as written in the paper
  c.model.crd_grad_weight = 1.0
  c.model.crd_diff = False      # the paper's CRD input: D_n ⊕ x only
  c.model.crd_arch = 'small'    # its 4-layer CRD, padded like the rest of the model
  c.model.crd_padding = ''
  # its pseudo-anomalies: the restoration stages' generator (no border moves, every paste
  # labelled, real textures only)
  c.crd_anomaly.update(dict(shapes=c.anomaly.shapes, fillers=c.anomaly.fillers,
                            min_opacity=c.anomaly.min_opacity, edge=0.0, visible=0.0,
                            procedural=0))
  # the paper's plain reconstruction of clean images, every skip (docs/design.md, Suppression)
  for stage in (c.stage1, c.stage2):
    stage.restore, stage.noise, stage.region_weight = False, 0.0, 0.0
  c.model.skip_from = 1
  return c
