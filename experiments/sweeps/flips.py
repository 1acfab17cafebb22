"""Random flips of the CRD's training images (stage 3), for the border share.

`experiments/border_profile.py` on the chosen `mtd.py:cpu` run (seed 0): the raw map's 99th
percentile within 16 px of the border is 1.2-1.6x the interior's on the training normals the
CRD learned from, but 1.6-2.3x on held-out normals, while the images' own border contrast and
the reconstruction's border error are the same on both. The CRD has learned the borders of
its 685 training tiles, not what a tile border looks like. Left-right and top-bottom flips
(`stage3.flip=hv`; MTD tiles are symmetric both ways) show it each border on every side.
Stages 1-2 are reused; stage 3 retrains.
Not chosen: validation (I-AUROC + AUPRO)/2 88.2 vs 88.3 (docs/results/flips.md).

Its numbers in docs/results/ were measured with the rows as they were at commit f253e4e
(`git checkout f253e4e` reruns exactly that); today the rows vary only their axis on
today's `mtd.py:cpu`, and each run's env.json names the commit that trained it.
(Then: zero padding.)
"""


def get_sweep():
  return {
      'title': 'Random flips of the CRD training images',
      'config': 'mtd.py:cpu',
      'variants': [
          ('no flips (mtd.py:cpu)', []),
          ('stage 3 flips left-right and top-bottom', ['stage3.flip=hv']),
      ],
  }
