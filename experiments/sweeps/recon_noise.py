"""Noise on the reconstructions the CRD reads in training (stage 3), against the leak
between the stages (issue 32).

Stages 1-2 are fitted on the very images the CRD then learns from; if those images are
reconstructed better than any image it meets later, the CRD learns what a seen image's
reconstruction looks like and calls an unseen image's small extra error an anomaly.
`stage3.recon_noise=s` adds N(0, u²) per pixel, u ~ U[0, s] per image, to every D_n the CRD
reads in training (its `|D_n - x|` input with it); inference is unchanged. Stages 1-2 are
reused. 0.02 was sized from a first measurement on the first 200 training files (std of
D_n - x 0.0075 against 0.010 held out); over all 685 training normals
(`experiments/recon_gap.py`) there is no such difference on MTD (held-out / train 0.95-1.01
at every step), so the noise tests the CRD's tolerance, not a measured leak.
Not chosen (stage 3 at 4800 steps, two seeds): validation (I-AUROC + AUPRO)/2 88.9 (0.02)
and 89.8 (0.05, one seed up, one down) against 89.3; test 83.8 and 83.7 against 85.0
I-AUROC (docs/results/recon-noise.md).
"""


def get_sweep():
  return {
      'title': 'Noise on the reconstructions the CRD trains on',
      'config': 'mtd.py:cpu',
      'variants': [
          ('mtd.py:cpu', []),
          ('stage 3 recon noise 0.02', ['stage3.recon_noise=0.02']),
          ('stage 3 recon noise 0.05', ['stage3.recon_noise=0.05']),
      ],
  }
