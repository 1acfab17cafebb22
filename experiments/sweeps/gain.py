"""A random gain on the CRD's training images (stage 3), against memorised brightness.

On the chosen `mtd.py:cpu` run (seed 0) the CRD's image scores on 200 of its training normals
reach a 90th percentile of 0.13 and a maximum of 0.35, on the 76 held-out normals 0.28 and
0.66: it has learned its 685 training tiles. The three highest-scoring held-out normals are
all among the brightest tiles (grey level +1.7 standard deviations of the training normals'
110 +- 34), marked over diffuse texture. `stage3.jitter=0.3` multiplies each training image
of stage 3 by a gain in [0.74, 1.35] before the pseudo-anomaly is planted, so the CRD sees
every tile at brightnesses its training set does not hold. Stages 1-2 are reused.
Not chosen: validation (I-AUROC + AUPRO)/2 88.1 vs 88.3, test a tie (docs/results/gain.md).
"""


def get_sweep():
  return {
      'title': 'Random gain on the CRD training images',
      'config': 'mtd.py:cpu',
      'variants': [
          ('mtd.py:cpu', []),
          ('stage 3 gain jitter 0.3', ['stage3.jitter=0.3']),
      ],
  }
