"""How the RcAE and DPN pad image borders (issue: no systematic false alarms at image edges).
Zero padding (`model.padding=zeros`, the base default) shows every network a dark frame around the
tile, so the reconstruction errs most at the border and normal maps peak there (validation
`border_share` ~55 % at 64², against 44 % for a map with no preferred place). Reflect padding
(`model.padding=reflect`) keeps a flat image flat through every network (tested); it costs
1.5x (stage 1), 2.4x (stage 2) and 1.6x (stage 3) the step time on this 2-core CPU
(`bench --config experiments/configs/mtd.py:cpu --what train1,train2,train3`). The CRD pads
by reflection in both rows. Everything else is `mtd.py:cpu`; stages 1-3 retrain. Reflect was
chosen on validation ((I-AUROC + AUPRO)/2 89.0 vs 88.3, two seeds) and is `mtd.py:cpu`'s
default since; it does not move the normal maxima off the border (both 56.7 %).
"""


def get_sweep():
  return {
      'title': 'Border padding of the RcAE and DPN: zeros vs reflect',
      'config': 'mtd.py:cpu',
      'variants': [
          ('RcAE and DPN zero-padded', ['model.padding=zeros', 'model.crd_padding=reflect']),
          ('RcAE and DPN reflect-padded (chosen, default)', ['model.padding=reflect',
                                           'model.crd_padding=reflect']),
      ],
  }
