"""Weight decay on the CRD (issue: the detector must judge an unseen normal image as it judges
its training images). Cross-fitting stages 1-2 (`sweep crossfit`) brought the CRD's training
inputs' 99th-percentile score to the held-out normals' on MVTec bottle, but the held-out
median stayed ~1.5x the training median: the CRD itself fits its own training images. AdamW's
decoupled decay (`stage3.weight_decay`) limits how far it can: each step shrinks every
weight by lr x decay (at the demo's lr 1e-3 and 400 steps, 0.05 removes 2 % in all, 1.0 33 %). Stages 1-2 are the same
computation in both rows (the sweep reuses them). Pass the base with --config.
"""


def get_sweep():
  return {
      'title': 'Weight decay on the CRD (stage 3)',
      'config': 'mtd.py:cpu',
      'variants': [
          ('no weight decay (default)', ['stage3.weight_decay=0.0']),
          ('stage 3 weight decay 0.05', ['stage3.weight_decay=0.05']),
          ('stage 3 weight decay 1.0', ['stage3.weight_decay=1.0']),
      ],
  }
