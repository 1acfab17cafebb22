"""What the CRD fits (issue: the detector must judge an unseen normal image as it judges its
training images). Cross-fitting stages 1-2 and weight decay on the CRD left the held-out
normals' median score ~1.4x the training normals' on MVTec bottle
(docs/results/crossfit.md). Two ways the CRD could key on its own training images: how long
it fits them (the demo's 400 steps, about 34 epochs of 188 images, against 100), and the raw
image among its inputs (`model.crd_image=False`: D_n and |D_n - x| only, so the CRD sees how
each reconstruction differs from the input but not which training image it is). Stages 1-2
are the same computation in every row (the sweep reuses them). Pass the base with --config.
"""


def get_sweep():
  return {
      'title': 'What the CRD fits: its length, and the image among its inputs',
      'config': 'demo.py',
      'variants': [
          ('stage 3 for 400 steps (demo default)', ['stage3.steps=400']),
          ('stage 3 for 100 steps', ['stage3.steps=100']),
          ('CRD without the raw image', ['stage3.steps=400', 'model.crd_image=False']),
      ],
  }
