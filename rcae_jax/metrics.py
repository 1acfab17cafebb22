"""Image AUROC, pixel AUROC, AUPRO (FPR <= 0.3), image F1-max and pixel AP, in percent.

Exact (`compute_metrics`): all pixel metrics share one sort of the pixel scores; curves are
evaluated at every distinct score (ties grouped), so results match scikit-learn and a
threshold-by-threshold AUPRO; see tests/test_metrics.py.

Streamed (`PixelCurves`): the same curves over histograms of the pixel scores, filled batch
by batch, so memory does not grow with the test set (MTD at 1024² is ~600 M pixels). A
score's bin is the top `bits` bits of its order-preserving float32 key (sign, exponent and
bits-9 mantissa bits: bins 2^-(bits-9) wide relative to the score). The binned curves pass
through a subset of the exact curves' points, which bounds the error of each metric; the
bounds are computed from the histograms and reported with the metrics.
"""
import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), bool)


def _curve(scores, labels, weights=None):
  """Cumulative (negatives, positives[, weight]) at each distinct threshold, descending."""
  order = np.argsort(scores, kind='stable')[::-1]
  s = scores[order]
  y = labels[order]
  last = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1]  # last index of each tie group
  ctype = np.int64 if len(s) >= 2 ** 31 else np.int32
  tps = np.cumsum(y, dtype=ctype)[last].astype(np.float64)
  fps = (last + 1) - tps
  w = None if weights is None else np.cumsum(weights[order], dtype=np.float64)[last]
  return fps, tps, w


def _trapezoid(x, y):
  return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def auroc(scores, labels):
  scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels, bool).ravel()
  fps, tps, _ = _curve(scores, labels)
  if tps[-1] == 0 or fps[-1] == 0:
    raise ValueError('AUROC needs both normal and anomalous samples')
  return _trapezoid(np.r_[0, fps / fps[-1]], np.r_[0, tps / tps[-1]])


def average_precision(scores, labels):
  fps, tps, _ = _curve(np.asarray(scores).ravel(), np.asarray(labels, bool).ravel())
  precision = tps / (tps + fps)
  recall = tps / tps[-1]
  return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def f1_max(scores, labels):
  fps, tps, _ = _curve(np.asarray(scores, np.float64).ravel(), np.asarray(labels, bool).ravel())
  precision = tps / (tps + fps)
  recall = tps / tps[-1]
  f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
  return float(f1.max())


def inverse_region_sizes(masks):
  """-> (per pixel 1 / size of its 8-connected region, 0 on normal pixels; region count)."""
  w = np.zeros(masks.shape, np.float64)
  n_regions = 0
  for i, m in enumerate(masks):
    lab, n = ndimage.label(m, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(lab.ravel(), minlength=n + 1).astype(np.float64)
    inv = 1.0 / np.maximum(sizes, 1)
    inv[0] = 0.0
    w[i] = inv[lab]
    n_regions += n
  return w, n_regions


def region_weights(masks):
  """Per pixel: 1 / (n_regions * size of its 8-connected region), 0 on normal pixels."""
  w, n_regions = inverse_region_sizes(masks)
  if n_regions == 0:
    raise ValueError('AUPRO needs at least one anomalous region in the masks')
  return (w / n_regions).astype(np.float32)


def _kept(masks, valid):
  """The flat indices of the pixels to count (all, or where `valid`: kept-aspect images'
  padding is neither normal nor defective); a defect pixel outside them is an error."""
  if valid is None:
    return slice(None)
  valid = np.asarray(valid, bool)
  if valid.shape != masks.shape:
    raise ValueError(f'pixel metrics: valid {valid.shape} and masks {masks.shape} differ')
  if (masks & ~valid).any():
    raise ValueError('pixel metrics: defect pixels marked as padding (valid = False)')
  return valid.ravel()


def pixel_metrics(maps, masks, fpr_limit=0.3, valid=None):
  """(P-AUROC, pixel AP, AUPRO up to fpr_limit) from maps (N, H, W) and bool masks, over the
  `valid` pixels (bool (N, H, W)) or all."""
  masks = np.asarray(masks, bool)
  kept = _kept(masks, valid)
  scores = np.asarray(maps, np.float32).ravel()[kept]
  labels = masks.ravel()[kept]
  weights = region_weights(masks).ravel()[kept]
  fps, tps, pro = _curve(scores, labels, weights)
  del scores, weights
  return _from_curve(fps, tps, pro, fpr_limit)


def _from_curve(fps, tps, pro, fpr_limit):
  """(P-AUROC, pixel AP, AUPRO) from cumulative counts at descending thresholds."""
  if tps[-1] == 0 or fps[-1] == 0:
    raise ValueError('pixel metrics need both normal and anomalous pixels')
  fpr = np.r_[0, fps / fps[-1]]
  tpr = np.r_[0, tps / tps[-1]]
  pro = np.r_[0, pro]
  p_auroc = _trapezoid(fpr, tpr)
  precision = tps / (tps + fps)
  ap = float(np.sum(np.diff(tpr) * precision))
  # AUPRO: integrate PRO over FPR in [0, limit], interpolating the curve at the limit.
  k = np.searchsorted(fpr, fpr_limit, side='right')  # points with fpr <= limit: [:k]
  x, y = fpr[:k], pro[:k]
  if k < len(fpr) and x[-1] < fpr_limit:
    t = (fpr_limit - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
    x = np.r_[x, fpr_limit]
    y = np.r_[y, pro[k - 1] + t * (pro[k] - pro[k - 1])]
  aupro = _trapezoid(x, y) / fpr_limit
  return p_auroc, ap, aupro


def _bin_keys(values, bits):
  """float32 -> int64 bin whose order is the values' order (negatives below positives)."""
  u = np.ascontiguousarray(values, np.float32).view(np.uint32)
  key = np.where(u >> np.uint32(31), ~u, u | np.uint32(0x80000000))
  return (key >> np.uint32(32 - bits)).astype(np.int64)


class PixelCurves:
  """Pixel AUROC, AP and AUPRO from histograms filled batch by batch (bounded memory).

  Per bin: normal and anomalous pixel counts and the anomalous pixels' summed 1/region-size
  (each region's share of PRO). Accumulators add (`+`), e.g. normal images + one defect type.
  """

  def __init__(self, bits=20):
    if not 10 <= bits <= 24:
      raise ValueError(f'pixel histogram bits={bits}: use 10..24 (0 = exact metrics)')
    self.bits = bits
    self.neg = np.zeros(2 ** bits, np.int64)
    self.pos = np.zeros(2 ** bits, np.int64)
    self.pro = np.zeros(2 ** bits, np.float64)
    self.n_regions = 0

  def add(self, maps, masks, valid=None):
    """Adds maps (N, H, W) and bool masks, over the `valid` pixels (bool (N, H, W)) or all."""
    maps = np.asarray(maps, np.float32)
    masks = np.asarray(masks, bool)
    if maps.shape != masks.shape or maps.ndim != 3:
      raise ValueError(f'PixelCurves.add: maps {maps.shape} and masks {masks.shape} must both '
                       'be (N, H, W)')
    if not np.isfinite(maps).all():
      raise ValueError('pixel metrics: maps contain NaN/inf (diverged model?)')
    kept = _kept(masks, valid)
    keys, m = _bin_keys(maps.ravel()[kept], self.bits), masks.ravel()[kept]
    inv, n = inverse_region_sizes(masks)
    w = inv.ravel()[kept][m]
    if len(keys) * 16 < len(self.neg):  # a few pixels: no full-length histogram per batch
      np.add.at(self.neg, keys[~m], 1)
      np.add.at(self.pos, keys[m], 1)
      np.add.at(self.pro, keys[m], w)
    else:
      size = len(self.neg)
      self.neg += np.bincount(keys[~m], minlength=size)
      self.pos += np.bincount(keys[m], minlength=size)
      self.pro += np.bincount(keys[m], weights=w, minlength=size)
    self.n_regions += n
    return self

  def __add__(self, other):
    out = PixelCurves(self.bits)
    for name in ('neg', 'pos', 'pro', 'n_regions'):
      setattr(out, name, getattr(self, name) + getattr(other, name))
    return out

  def result(self, fpr_limit=0.3):
    """-> (P-AUROC, pixel AP, AUPRO, bounds): bounds on |binned - exact| of each, as
    fractions like the metrics (the exact curves pass through every binned point)."""
    if self.n_regions == 0:
      raise ValueError('AUPRO needs at least one anomalous region in the masks')
    nz = np.nonzero(self.neg + self.pos)[0][::-1]  # highest scores first
    neg, pos = self.neg[nz].astype(np.float64), self.pos[nz].astype(np.float64)
    fps, tps = np.cumsum(neg), np.cumsum(pos)
    pro = np.cumsum(self.pro[nz]) / self.n_regions
    p_auroc, ap, aupro = _from_curve(fps, tps, pro, fpr_limit)
    n_neg, n_pos = fps[-1], tps[-1]
    # AUROC: pairs sharing a bin count 1/2 here and 0..1 exactly
    auroc_bound = 0.5 * float(np.sum(pos * neg)) / (n_pos * n_neg)
    # AP: within a bin the exact precision lies between its lowest and highest reachable value
    tp0, fp0 = tps - pos, fps - neg
    p_hi = (tp0 + pos) / np.maximum(tp0 + pos + fp0, 1)
    p_lo = (tp0 + 1) / (tp0 + 1 + fp0 + neg)
    ap_bound = float(np.sum(np.where(pos > 0, pos / n_pos * (p_hi - p_lo), 0.0)))
    # AUPRO: between two binned points the exact monotone curve stays in their box
    fpr, prc = np.r_[0, fps / n_neg], np.r_[0, pro]
    inside = fpr[:-1] < fpr_limit
    aupro_bound = float(np.sum((np.diff(fpr) * np.diff(prc) / 2)[inside])) / fpr_limit
    return p_auroc, ap, aupro, {'pixel_auroc': auroc_bound, 'pixel_ap': ap_bound,
                                'aupro': aupro_bound}


def image_metrics(image_scores, image_labels):
  image_scores = np.asarray(image_scores, np.float64)
  image_labels = np.asarray(image_labels).astype(bool)
  if not np.isfinite(image_scores).all():
    raise ValueError('compute_metrics: image scores contain NaN/inf (diverged model?)')
  return {'image_auroc': 100 * auroc(image_scores, image_labels),
          'image_f1_max': 100 * f1_max(image_scores, image_labels)}


def streamed_metrics(image_scores, image_labels, curves, fpr_limit=0.3):
  """The field's metrics from image scores and a filled PixelCurves, with 'bounds' (percent
  points) on the pixel metrics' histogram error."""
  p_auroc, ap, aupro, bounds = curves.result(fpr_limit)
  out = image_metrics(image_scores, image_labels)
  out.update({'pixel_auroc': 100 * p_auroc, 'aupro': 100 * aupro, 'pixel_ap': 100 * ap,
              'bounds': {k: 100 * v for k, v in bounds.items()}})
  return {k: out[k] for k in METRICS + ('bounds',)}


def compute_metrics(image_scores, image_labels, anomaly_maps, masks, valid=None):
  """The field's metrics in percent: image_auroc, pixel_auroc, aupro, image_f1_max, pixel_ap.

  image_scores (N,), image_labels (N,) {0, 1}, anomaly_maps (N, H, W), masks (N, H, W) bool;
  valid (N, H, W) bool: the pixels the pixel metrics count (None: all).
  """
  image_scores = np.asarray(image_scores, np.float64)
  image_labels = np.asarray(image_labels).astype(bool)
  maps, masks = np.asarray(anomaly_maps), np.asarray(masks)
  n = len(image_scores)
  if image_labels.shape != (n,) or maps.ndim != 3 or maps.shape[0] != n or masks.shape != maps.shape:
    raise ValueError(f'compute_metrics: shapes scores {image_scores.shape}, labels '
                     f'{image_labels.shape}, maps {maps.shape}, masks {masks.shape} do not fit '
                     '(N,), (N,), (N, H, W), (N, H, W)')
  if not np.isfinite(image_scores).all() or not np.isfinite(maps).all():
    raise ValueError('compute_metrics: scores or maps contain NaN/inf (diverged model?)')
  p_auroc, ap, aupro = pixel_metrics(maps, masks, valid=valid)
  return {
      'image_auroc': 100 * auroc(image_scores, image_labels),
      'pixel_auroc': 100 * p_auroc,
      'aupro': 100 * aupro,
      'image_f1_max': 100 * f1_max(image_scores, image_labels),
      'pixel_ap': 100 * ap,
  }


METRICS = ('image_auroc', 'pixel_auroc', 'aupro', 'image_f1_max', 'pixel_ap')
