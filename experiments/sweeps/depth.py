"""Paper Table: recursion depth N (MVTec: N=1 86.2/87.4, 3 96.3/96.8, 5 98.9/98.7, 6 98.7/98.4)."""


def get_sweep():
  return {'title': 'Recursion depth N', 'config': 'base.py',
          'variants': [(f'N={n}', [f'model.depth={n}']) for n in (1, 3, 5, 6)]}
