"""Progressive suppression: how much of a planted defect each reconstruction still carries.

RcAE's defining property (DESIGN.md §1): for a defect planted in a normal image, the share
still present in R_n falls as n grows, while normal regions are reconstructed. Measured on
pairs (clean image, the same image with a pseudo-anomaly), where the clean truth is known:

  residual(n)     = Σ |R_n − clean| / Σ |defective − clean|, over the visibly changed pixels
  normal_error(n) = mean |R_n − clean| over the pixels the defect did not touch

(channel means, pooled over all images). An identity map gives residual 1, a model that
outputs the clean image gives 0; a blurry model pays its normal error inside the defect too.
"""
import numpy as np

# A pixel counts as changed by the planted defect when its channel-mean change exceeds this
# (≈ 5 grey levels of 255): fainter changes are not visible and would only add noise.
VISIBLE = 0.02


def changed_pixels(defective, clean, threshold=VISIBLE):
  """(B, H, W, C) float pairs -> (B, H, W) bool: where the planted defect is visible."""
  return np.abs(defective - clean).mean(-1) > threshold


def sums(seq, defective, clean, untouched):
  """The additive parts of `measure` for one batch (float64): add batches, then `finish`."""
  seq, defective, clean = (np.asarray(a, np.float32) for a in (seq, defective, clean))
  if seq.shape[1:] != clean.shape or defective.shape != clean.shape:
    raise ValueError(f'seq {seq.shape[1:]} / defective {defective.shape} / clean '
                     f'{clean.shape}: one image shape expected')
  changed = changed_pixels(defective, clean)
  err = np.abs(seq - clean[None]).mean(-1)  # (N, B, H, W)
  return {'planted': np.abs(defective - clean).mean(-1)[changed].sum(dtype=np.float64),
          'changed_error': np.array([e[changed].sum(dtype=np.float64) for e in err]),
          'normal_error': np.array([e[untouched].sum(dtype=np.float64) for e in err]),
          'n_normal': int(np.count_nonzero(untouched))}


def add(a, b):
  return b if a is None else {k: a[k] + b[k] for k in a}


def finish(total):
  """-> {'residual': [N], 'normal_error': [N]} from summed `sums`."""
  planted = total['planted']
  residual = [float(e / planted) if planted > 0 else float('nan')
              for e in total['changed_error']]
  normal = [float(e / total['n_normal']) if total['n_normal'] else float('nan')
            for e in total['normal_error']]
  return {'residual': residual, 'normal_error': normal}


def measure(seq, defective, clean, untouched):
  """Residual and normal error per step.

  seq: (N, B, H, W, C) reconstructions of `defective` (B, H, W, C); clean: the truth;
  untouched: (B, H, W) bool, pixels the defect did not alter (normal pixels).
  Returns {'residual': [N], 'normal_error': [N]} (residual NaN when nothing visibly changed).
  """
  return finish(sums(seq, defective, clean, untouched))
