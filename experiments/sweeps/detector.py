"""The detector (issue: a CRD that finds real defects): the suppressing RcAE + DPN scored
by its reconstruction error, against CRDs that differ in design and in the pseudo-anomalies
they learn from. Stages 1-2 are shared by every variant (copied, not retrained).

- CRD small, old pseudo-anomalies: the project's CRD before this change (4 layers, ~11 px,
  zero padding, unweighted BCE, the restoration stages' generator);
- CRD U-Net, old pseudo-anomalies: only the design changes (image-scale context, reflect
  padding, class-balanced BCE);
- CRD small, new pseudo-anomalies: only the generator changes (Perlin, cracks, FAE shapes,
  intensity fills, border-touching shapes, procedural textures, no label on invisible pastes);
- CRD U-Net, new pseudo-anomalies: both, with class-balanced BCE;
- CRD U-Net, unweighted BCE: class balance off (every pixel weighs the same): chosen on
  validation, today's defaults;
- top-k mean score rows: the image score validation preferred (`score_choices`), on the
  same trained networks.

Its numbers in docs/results/ were measured with the rows as they were at commit f253e4e
(`git checkout f253e4e` reruns exactly that); today the rows vary only their axis on
today's `mtd.py:cpu`, and each run's env.json names the commit that trained it.
(Then: stage 3 of 800 constant steps, stages 1-2 restoring pasted shapes, zero padding.)
"""

# The pseudo-anomalies and CRD the project had before this study (an axis of it).
OLD_GENERATOR = ["crd_anomaly.shapes=('patch','blob','line','curve')",
                 "crd_anomaly.fillers=('color','copy','other','texture','noise')",
                 'crd_anomaly.min_opacity=0.5', 'crd_anomaly.edge=0.0',
                 'crd_anomaly.visible=0.0', 'crd_anomaly.procedural=0']
OLD_CRD = ['model.crd_arch=small', "model.crd_padding=''", 'model.crd_pos_weight=1.0']


def get_sweep():
  variants = [
      ('+RcAE +DPN', ['stages=(1, 2)']),
      ('CRD small, old pseudo-anomalies', OLD_CRD + OLD_GENERATOR),
      ('CRD U-Net, new pseudo-anomalies', ['model.crd_pos_weight=0.0']),
      ('CRD small, new pseudo-anomalies', OLD_CRD),
      ('CRD U-Net, old pseudo-anomalies', OLD_GENERATOR + ['model.crd_pos_weight=0.0']),
      ('CRD U-Net, unweighted BCE', []),  # the CRD's defaults
      # scored differently, same training: stages 1-3 are copied, only evaluation runs
      ('CRD U-Net, top-k mean score', ['model.crd_pos_weight=0.0', 'score.image=topk']),
      ('+RcAE +DPN, top-k mean score', ['stages=(1, 2)', 'score.image=topk']),
  ]
  return {
      'title': 'Detector: CRD design x pseudo-anomalies',
      'config': 'mtd.py:cpu',
      'variants': variants,
  }
