"""How long the CRD fits its training images (issue: the detector must judge an unseen normal
image as it judges its training images). Cross-fitting stages 1-2 and weight decay on the
CRD left the held-out normals' median score ~1.4x the training normals' on MVTec bottle
(docs/results/crossfit.md): the CRD itself learns its own training images. Here stage 3
trains a quarter as long (the demo's 400 steps -> 100, about 34 -> 9 epochs of 188 images);
stages 1-2 are the same computation in both rows (the sweep reuses them). Pass the base
with --config.
"""


def get_sweep():
  return {
      'title': 'Length of the CRD fit (stage 3 steps)',
      'config': 'demo.py',
      'variants': [
          ('stage 3 for 400 steps (demo default)', ['stage3.steps=400']),
          ('stage 3 for 100 steps', ['stage3.steps=100']),
      ],
  }
