"""Which RcAE suppresses planted defects while reconstructing normal regions (issue 12).

Stages 1-2 only; choose with `--validation-only` (the suppression columns and the
reconstruction-error map's validation AUROC), never on test. Paper-literal first.
"""

_PAPER = ['stages=(1, 2)', 'stage1.restore=False', 'stage2.restore=False', 'stage1.noise=0.0',
          'stage2.noise=0.0', 'model.skip_from=1']
_RESTORE = ['stage1.restore=True', 'stage2.restore=True']
_NOISE = ['stage1.noise=0.04', 'stage2.noise=0.04']
_BALANCED = ['stage1.region_weight=1.0', 'stage2.region_weight=1.0']


def get_sweep():
  return {
      'title': 'Suppression: objective, identity noise and the full-resolution skip',
      'config': 'base.py',
      'variants': [
          ('paper: reconstruct, all skips', _PAPER),
          ('reconstruct, no full-res skip', _PAPER + ['model.skip_from=2']),
          ('restore, all skips', _PAPER + _RESTORE),
          ('restore + noise, all skips', _PAPER + _RESTORE + _NOISE),
          ('restore + noise, no full-res skip', _PAPER + _RESTORE + _NOISE + ['model.skip_from=2']),
          ('restore balanced, all skips', _PAPER + _RESTORE + _BALANCED),
          ('restore balanced + noise, all skips', _PAPER + _RESTORE + _BALANCED + _NOISE),
          ('restore balanced + noise, no full-res skip',
           _PAPER + _RESTORE + _BALANCED + _NOISE + ['model.skip_from=2']),
          ('restore balanced + noise, all skips, 2000/600 steps',
           _PAPER + _RESTORE + _BALANCED + _NOISE + ['stage1.steps=2000', 'stage2.steps=600']),
      ],
  }
