"""RcAE against FAE on the same data, metrics, budget (optimizer steps) and hardware.

The base config (--config) sets the data and RcAE's stage budgets; FAE gets their sum in its
one stage (`experiments/configs/fae.py`, `to_fae`). Rows:
- RcAE with the paper's objective: stages 1-2 reconstruct clean images (as paper.py);
- RcAE with the project defaults: stages 1-2 restore pseudo-anomalies (docs/design.md);
- FAE scored like RcAE's reconstruction rows (Gaussian smoothing, intensity+gradient error);
- FAE scored its own way (SSIM + GMS discrepancy, repeated mean filter): scoring only, so it
  reuses the trained network of the row above.
"""
from experiments.configs import fae


def _fae_own_scoring(c):
  c = fae.to_fae(c)
  c.score.discrepancy, c.score.smoothing = 'ssim+gms', 'mean'
  return c


def get_sweep():
  return {
      'title': 'Methods: RcAE vs FAE (same data, budget and metrics)',
      'config': 'mtd.py',
      'variants': [
          ('RcAE (paper objective)', ['stage1.restore=False', 'stage2.restore=False',
                                      'stage1.noise=0.0', 'stage2.noise=0.0',
                                      'stage1.region_weight=0.0', 'stage2.region_weight=0.0']),
          ('RcAE (project defaults)', []),
          ('FAE (RcAE scoring)', fae.to_fae),
          ('FAE (SSIM+GMS, mean filter)', _fae_own_scoring),
      ],
  }
