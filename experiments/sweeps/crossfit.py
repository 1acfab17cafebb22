"""Cross-fitting (issue: the detector must judge an unseen normal image as it judges its
training images). Without it stages 1-2 are fitted on the very images the CRD then learns
from; with `crossfit.folds=2` the CRD learns only from reconstructions made by a stages-1-2
model that never saw the image (rcae_jax/crossfit.py). The cross-fitted run's validation.json
also scores both test-time choices (`crossfit_infer`: the stages 1-2 trained on every image,
or the two fold models averaged) and its `normal_gap` scores the training normals as the CRD
saw them (out of fold). Stage 1 is the same computation in both rows (the sweep reuses it).
Pass the base with --config (mtd:cpu, demo for MVTec bottle).
"""


def get_sweep():
  return {
      'title': 'Cross-fitting stages 1-2 for the CRD',
      'config': 'mtd.py:cpu',
      'variants': [
          ('no cross-fitting', ['crossfit.folds=0']),
          ('cross-fitted, 2 folds', ['crossfit.folds=2']),
      ],
  }
