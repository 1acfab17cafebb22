"""What stages 1-2 learn to restore. The RcAE and DPN restore pasted pseudo-anomalies
(`anomaly.*`: patches, blobs, scratches, curves; opacity >= 0.5, away from the border); the
CRD trains on a wider generator (`crd_anomaly.*`: also Perlin regions, thin cracks, FAE's
shapes, intensity changes, fainter pastes, shapes on the border, procedural textures). If the
reconstruction never learned to remove a crack or a faint region, the CRD sees no difference
there to read. The second row restores the CRD's families too (chosen on validation, now
`mtd.py:cpu`'s default); everything else is `mtd.py:cpu` (stage 3: 4800 cosine steps), so
stage 3 retrains on each row's stages 1-2. The rows name the families they restore.

Its numbers in docs/results/ were measured with the rows as they were at commit f253e4e
(`git checkout f253e4e` reruns exactly that); today the rows vary only their axis on
today's `mtd.py:cpu`, and each run's env.json names the commit that trained it.
(Then: zero padding.)
"""

# The base `anomaly` families: opaque pasted shapes away from the border.
_PASTED_SHAPES = [
    "anomaly.shapes=('patch','blob','line','curve')",
    "anomaly.fillers=('color','copy','other','texture','noise')",
    'anomaly.min_opacity=0.5', 'anomaly.edge=0.0', 'anomaly.visible=0.0',
    'anomaly.procedural=0',
]
# The CRD generator's families and strengths (base `crd_anomaly`), for the restoring stages.
_CRD_FAMILIES = [
    "anomaly.shapes=('patch','blob','line','curve','perlin','crack','fae')",
    "anomaly.fillers=('color','copy','other','texture','noise','intensity')",
    'anomaly.min_opacity=0.3', 'anomaly.edge=0.3', 'anomaly.visible=0.08',
    'anomaly.procedural=16',
]


def get_sweep():
  return {
      'title': "Stages 1-2 restoring the pasted families vs the CRD's families",
      'config': 'mtd.py:cpu',
      'variants': [
          ('stages 1-2 restore pasted shapes', _PASTED_SHAPES),
          ("stages 1-2 restore the CRD's families (chosen, default)", _CRD_FAMILIES),
      ],
  }
