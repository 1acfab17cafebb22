"""Metrics on hand-made cases and against independent computations (scikit-learn, slow AUPRO)."""
import numpy as np
import pytest
from scipy import ndimage
from sklearn import metrics as skm

from rcae_jax import metrics


def slow_aupro(maps, masks, limit=0.3):
  """Threshold by threshold, straight from the MVTec AD definition."""
  regions = []
  for i, m in enumerate(masks):
    lab, n = ndimage.label(m, structure=np.ones((3, 3)))
    regions += [(i, lab == r) for r in range(1, n + 1)]
  normal = ~masks
  pts = [(0.0, 0.0)]
  for t in np.unique(maps)[::-1]:
    pred = maps >= t
    fpr = (pred & normal).sum() / normal.sum()
    pro = np.mean([(pred[i] & r).sum() / r.sum() for i, r in regions])
    pts.append((fpr, pro))
  fpr, pro = np.array(pts).T
  keep = fpr <= limit
  x, y = list(fpr[keep]), list(pro[keep])
  j = np.argmax(fpr > limit)
  if fpr[-1] > limit and x[-1] < limit:
    y.append(pro[j - 1] + (limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1]) * (pro[j] - pro[j - 1]))
    x.append(limit)
  return np.trapezoid(y, x) / limit


def random_case(seed, n=6, size=20, ties=False):
  rng = np.random.default_rng(seed)
  masks = np.zeros((n, size, size), bool)
  for i in range(n // 2):
    y, x = rng.integers(0, size - 6, 2)
    masks[i, y:y + rng.integers(2, 6), x:x + rng.integers(2, 6)] = True
    masks[i, rng.integers(size), rng.integers(size)] = True  # a one-pixel region
  maps = rng.random((n, size, size)) + masks * rng.uniform(0.2, 0.8)
  if ties:
    maps = maps.round(1)
  maps = maps.astype(np.float32)
  labels = masks.reshape(n, -1).any(1).astype(int)
  scores = maps.reshape(n, -1).max(1) + rng.normal(0, 0.3, n)
  return scores, labels, maps, masks


@pytest.mark.parametrize('seed,ties', [(0, False), (1, True), (2, False), (3, True)])
def test_against_independent_computation(seed, ties):
  scores, labels, maps, masks = random_case(seed, ties=ties)
  m = metrics.compute_metrics(scores, labels, maps, masks)
  assert abs(m['image_auroc'] - 100 * skm.roc_auc_score(labels, scores)) < 0.01
  assert abs(m['pixel_auroc'] - 100 * skm.roc_auc_score(masks.ravel(), maps.ravel())) < 0.01
  assert abs(m['pixel_ap'] - 100 * skm.average_precision_score(masks.ravel(), maps.ravel())) < 0.01
  p, r, _ = skm.precision_recall_curve(labels, scores)
  assert abs(m['image_f1_max'] - 100 * np.max(2 * p * r / np.maximum(p + r, 1e-12))) < 0.01
  assert abs(m['aupro'] - 100 * slow_aupro(maps, masks)) < 0.01
  assert all(0 <= v <= 100 for v in m.values())


def test_known_answers():
  masks = np.zeros((2, 4, 4), bool)
  masks[0, :2, :2] = True
  perfect = masks.astype(np.float32)
  m = metrics.compute_metrics([1.0, 0.0], [1, 0], perfect, masks)
  assert m['image_auroc'] == 100 and m['pixel_auroc'] == 100 and m['aupro'] == 100
  assert m['image_f1_max'] == 100 and m['pixel_ap'] == 100
  inverted = 1 - perfect
  m = metrics.compute_metrics([0.0, 1.0], [1, 0], inverted, masks)
  assert m['image_auroc'] == 0 and m['pixel_auroc'] == 0 and m['aupro'] == 0
  const = np.zeros_like(perfect)  # one threshold: the whole curve jumps from (0,0) to (1,1)
  m = metrics.compute_metrics([0.5, 0.5], [1, 0], const, masks)
  assert m['image_auroc'] == 50 and m['pixel_auroc'] == 50
  assert abs(m['aupro'] - 100 * 0.3 * 0.3 / 2 / 0.3) < 1e-9  # PRO = FPR on the diagonal


def test_aupro_regions_are_eight_connected():
  masks = np.zeros((1, 6, 6), bool)
  masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours: one region
  w = metrics.region_weights(masks)
  assert np.isclose(w[0, 0, 0], 0.5) and np.isclose(w.sum(), 1.0)


def test_bad_inputs_refused():
  scores, labels, maps, masks = random_case(0)
  with pytest.raises(ValueError, match='shapes'):
    metrics.compute_metrics(scores[:-1], labels, maps, masks)
  bad = maps.copy()
  bad[0, 0, 0] = np.nan
  with pytest.raises(ValueError, match='NaN'):
    metrics.compute_metrics(scores, labels, bad, masks)
  with pytest.raises(ValueError, match='both'):
    metrics.compute_metrics(scores, np.ones_like(labels), maps, masks)


def test_bin_keys_preserve_order():
  v = np.array([-3.0, -1e-30, -0.0, 0.0, 1e-38, 0.5, 0.5000001, 2.0, 1e30], np.float32)
  k = metrics._bin_keys(v, 24)
  assert (np.diff(k) >= 0).all() and k[-1] > k[-2] > k[5] > k[3] >= k[2] > k[0]


@pytest.mark.parametrize('seed,ties,bits', [(0, False, 20), (1, True, 20), (2, False, 12),
                                            (3, True, 10)])
def test_streamed_pixel_metrics_within_their_bound(seed, ties, bits):
  """Histograms filled in batches of 2 give the exact metrics to within the reported bound,
  and exactly the exact metrics when no bin holds two distinct scores (rounded maps at 20
  bits: a bin then holds tied scores only, which the exact curves group too)."""
  scores, labels, maps, masks = random_case(seed, ties=ties)
  exact = metrics.compute_metrics(scores, labels, maps, masks)
  curves = metrics.PixelCurves(bits)
  for i in range(0, len(maps), 2):
    curves.add(maps[i:i + 2], masks[i:i + 2])
  # the counts, whichever way add filled them (np.add.at for batches small against 2^bits)
  count = lambda m: np.bincount(metrics._bin_keys(maps[m], bits), minlength=2 ** bits)  # pylint: disable=protected-access
  np.testing.assert_array_equal(curves.neg, count(~masks))
  np.testing.assert_array_equal(curves.pos, count(masks))
  got = metrics.streamed_metrics(scores, labels, curves)
  for k in ('pixel_auroc', 'pixel_ap', 'aupro'):
    assert abs(got[k] - exact[k]) <= got['bounds'][k] + 1e-9, (k, got[k], exact[k])
    if ties and bits == 20:  # 0.1-spaced values never share a 2^-11-wide bin
      assert abs(got[k] - exact[k]) < 1e-5  # the exact path sums float32 weights
  if bits == 10:  # coarse bins: a real error, and the bound covers it
    assert got['bounds']['pixel_auroc'] > 0
  assert got['image_auroc'] == exact['image_auroc']
  halves = (metrics.PixelCurves(bits).add(maps[:3], masks[:3]) +
            metrics.PixelCurves(bits).add(maps[3:], masks[3:]))
  again = metrics.streamed_metrics(scores, labels, halves)
  for k in ('pixel_auroc', 'pixel_ap', 'aupro'):
    assert abs(again[k] - got[k]) < 1e-9 and abs(again['bounds'][k] - got['bounds'][k]) < 1e-9


def test_a_thin_defect_vanishing_in_the_resize_is_counted(tmp_path):
  """A 1-px line at 256² has no mask pixel left at 64² (bilinear, half coverage): the image
  still counts as defective, and evaluate reports it instead of scoring it silently."""
  from PIL import Image
  from rcae_jax.data import common
  from rcae_jax.evaluators import test_metrics
  line = np.zeros((256, 256), np.uint8)
  line[100, 20:200] = 255
  Image.fromarray(line).save(tmp_path / 'm.png')
  Image.fromarray(np.zeros((256, 256), np.uint8)).save(tmp_path / 'x.png')
  assert common.read_mask(tmp_path / 'm.png', tmp_path / 'x.png', 256).sum() == 180
  thin = common.read_mask(tmp_path / 'm.png', tmp_path / 'x.png', (64, 64))
  assert not thin.any()
  labels = np.array([0, 1, 1, 1, 0])
  has_pixel = np.array([False, False, True, False, False])
  got = test_metrics.empty_masks(labels, has_pixel, ('', 'crack', 'crack', 'break', ''), (64, 96))
  assert got == {'n': 2, 'size': [64, 96], 'per_defect': {'break': 1, 'crack': 1}}
