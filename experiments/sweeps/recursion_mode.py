"""Recursion dynamics comparison: depth (the paper) vs iterate (R_n = AE(R_{n-1}), lax.scan)."""


def get_sweep():
  return {'title': 'Recursion mode', 'config': 'base.py',
          'variants': [('depth', ['model.recursion=depth']),
                       ('iterate', ['model.recursion=iterate'])]}
