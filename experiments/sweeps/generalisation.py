"""Leave-one-family-out: the CRD is trained without one group of pseudo-anomaly families
(`crd_anomaly.holdout`) and validated on exactly those (validation.json 'holdout'), next to
the usual validation over every family. A detector design that only knows what its
generator draws scores well on the usual validation and poorly on the held-out families;
choose designs on the held-out columns. Stages 1-2 are trained once and shared.

Run it with the configuration to judge, e.g. `--config mtd:cpu --set model.crd_arch=small`
for the paper's CRD.
"""

GROUPS = [
    ('thin shapes', ('line', 'curve', 'crack')),
    ('bulky shapes', ('patch', 'blob', 'fae')),
    ('Perlin shapes', ('perlin',)),
    ('image fillers', ('copy', 'other', 'intensity')),
    ('foreign fillers', ('color', 'texture', 'noise')),
]


def get_sweep():
  return {
      'title': 'Generalisation: pseudo-anomaly families left out of the CRD',
      'config': 'base.py',
      'variants': [('all families', [])] + [
          (f'without {name}', [f'crd_anomaly.holdout={families}']) for name, families in GROUPS],
  }
