"""Paper: weight sharing on/off (unshared: 71.3 I-AUROC on MVTec)."""


def get_sweep():
  return {'title': 'Weight sharing across recursion levels', 'config': 'base.py',
          'variants': [('shared', ['model.shared=True']), ('unshared', ['model.shared=False'])]}
