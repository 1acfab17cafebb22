"""Image AUROC, pixel AUROC, AUPRO (FPR <= 0.3), image F1-max and pixel AP, in percent.

All pixel metrics share one sort of the pixel scores. Curves are evaluated at every
distinct score (exact, ties grouped), so results match scikit-learn and a
threshold-by-threshold AUPRO; see tests/test_metrics.py.
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


def region_weights(masks):
  """Per pixel: 1 / (n_regions * size of its 8-connected region), 0 on normal pixels."""
  sizes_per_image, labels_per_image, n_regions = [], [], 0
  for m in masks:
    lab, n = ndimage.label(m, structure=_EIGHT_CONNECTED)
    labels_per_image.append(lab)
    sizes_per_image.append(np.bincount(lab.ravel(), minlength=n + 1).astype(np.float64))
    n_regions += n
  if n_regions == 0:
    raise ValueError('AUPRO needs at least one anomalous region in the masks')
  w = np.zeros(masks.shape, np.float32)
  for i, (lab, sizes) in enumerate(zip(labels_per_image, sizes_per_image)):
    inv = np.where(sizes > 0, 1.0 / (n_regions * np.maximum(sizes, 1)), 0.0)
    inv[0] = 0.0
    w[i] = inv[lab]
  return w


def pixel_metrics(maps, masks, fpr_limit=0.3):
  """(P-AUROC, pixel AP, AUPRO up to fpr_limit) from maps (N, H, W) and bool masks."""
  masks = np.asarray(masks, bool)
  scores = np.asarray(maps, np.float32).ravel()
  labels = masks.ravel()
  weights = region_weights(masks).ravel()
  fps, tps, pro = _curve(scores, labels, weights)
  del scores, weights
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


def compute_metrics(image_scores, image_labels, anomaly_maps, masks):
  """The field's metrics in percent: image_auroc, pixel_auroc, aupro, image_f1_max, pixel_ap.

  image_scores (N,), image_labels (N,) {0, 1}, anomaly_maps (N, H, W), masks (N, H, W) bool.
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
  p_auroc, ap, aupro = pixel_metrics(maps, masks)
  return {
      'image_auroc': 100 * auroc(image_scores, image_labels),
      'pixel_auroc': 100 * p_auroc,
      'aupro': 100 * aupro,
      'image_f1_max': 100 * f1_max(image_scores, image_labels),
      'pixel_ap': 100 * ap,
  }


METRICS = ('image_auroc', 'pixel_auroc', 'aupro', 'image_f1_max', 'pixel_ap')
