"""Ablation: decoder skip connections on/off."""


def get_sweep():
  return {'title': 'Skip connections', 'config': 'base.py',
          'variants': [('skips', ['model.skips=True']), ('no skips', ['model.skips=False'])]}
