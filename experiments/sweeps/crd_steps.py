"""Paper Table: CRD input steps with N = 5 ({5} 95.7/96.6, {1,3,5} 98.0/97.1, all 98.9/98.7)."""


def get_sweep():
  return {'title': 'CRD input steps (N = 5)', 'config': 'base.py',
          'variants': [('{5}', ['model.depth=5', 'model.crd_steps=(5,)']),
                       ('{1,3,5}', ['model.depth=5', 'model.crd_steps=(1, 3, 5)']),
                       ('{1..5}', ['model.depth=5', 'model.crd_steps=()'])]}
