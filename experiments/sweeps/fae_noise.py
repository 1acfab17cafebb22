"""FAE's identity anchor: noise on input and target (σ ~ U[0, 0.04] per image) against none
(σ = 0), everything else as experiments/configs/fae.py sets it on the base config."""
from experiments.configs import fae


def get_sweep():
  return {
      'title': 'FAE noise ablation',
      'config': 'mtd.py',
      'variants': [
          ('FAE, noise U[0, 0.04]', fae.to_fae),
          ('FAE, no noise', lambda c: _no_noise(fae.to_fae(c))),
      ],
  }


def _no_noise(c):
  c.stage1.noise = 0.0
  return c
