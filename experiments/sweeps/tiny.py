"""Tests and CI: three short variants on the built-in data (a few minutes on 2 CPU cores)."""


def get_sweep():
  return {
      'title': 'Tiny component sweep',
      'config': 'tiny.py',
      'variants': [
          ('ConvAE baseline', ['model.shared=False', 'depth_sampling=max', 'stages=(1,)',
                               'stage1.steps=40']),
          ('+RcAE +DPN', ['stages=(1, 2)', 'stage1.steps=40', 'stage2.steps=10']),
          ('+RcAE +DPN +CRD', ['stage1.steps=40', 'stage2.steps=10', 'stage3.steps=30']),
      ],
  }
