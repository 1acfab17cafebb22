"""Paper: 10 % of the training data (84.1/93.4 on MVTec) against all of it."""


def get_sweep():
  return {'title': 'Training data fraction', 'config': 'base.py',
          'variants': [('100 %', ['data.train_fraction=1.0']), ('10 %', ['data.train_fraction=0.1'])]}
