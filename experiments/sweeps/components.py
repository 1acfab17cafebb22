"""Paper Table: component ablation (MVTec: 82.4/90.8 -> 94.1/95.8 -> 95.7/96.6 -> 98.9/98.7)."""


def get_sweep():
  return {
      'title': 'Component ablation (ConvAE -> +RcAE -> +DPN -> +CRD)',
      'config': 'base.py',
      'variants': [
          # one non-recursive encoder-decoder of the same depth, always trained at n = N
          ('ConvAE baseline', ['model.shared=False', 'depth_sampling=max', 'stages=(1,)']),
          ('+RcAE', ['stages=(1,)']),
          ('+RcAE +DPN', ['stages=(1, 2)']),
          ('+RcAE +DPN +CRD', ['stages=(1, 2, 3)']),
      ],
  }
