"""Training schedule and length at the CPU budget (`mtd.py:cpu`: 2000/600/800 steps,
Adam 1e-3 held constant): a cosine decay of stage 3's learning rate to zero, and a three
times longer stage 3 (`stageK.schedule=cosine` applies to stages 1-2 alike). Every row
shares stages 1-2.
"""

COSINE_3 = ['stage3.schedule=cosine']


def get_sweep():
  return {
      'title': 'Training schedule: constant vs cosine learning rate, stage-3 length',
      'config': 'mtd.py:cpu',
      'variants': [
          ('constant (defaults)', []),
          ('stage 3 cosine', COSINE_3),
          ('stage 3 cosine, 3x steps', COSINE_3 + ['stage3.steps=2400']),
      ],
  }
