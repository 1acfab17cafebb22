"""Suppression measurement on known answers, and the pieces of the restoration objective."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from rcae_jax import anomalies, evaluators, files, losses, methods, suppression
from rcae_jax import model as model_lib
from rcae_jax.evaluators import validation


def _pair():
  rng = np.random.default_rng(0)
  clean = rng.uniform(0.2, 0.8, (3, 8, 8, 2)).astype(np.float32)
  defective = clean.copy()
  defective[:, 2:5, 3:6] += 0.15  # a visible planted defect
  defective[0, 7, 7] += 0.01      # an invisible change: not counted
  untouched = (defective == clean).all(-1)
  return clean, defective, untouched


def test_identity_gives_one_and_clean_output_gives_zero():
  clean, defective, untouched = _pair()
  ident = suppression.measure(np.stack([defective] * 3), defective, clean, untouched)
  np.testing.assert_allclose(ident['residual'], [1, 1, 1], rtol=1e-6)
  np.testing.assert_allclose(ident['normal_error'], [0, 0, 0], atol=1e-7)
  perfect = suppression.measure(np.stack([clean] * 2), defective, clean, untouched)
  np.testing.assert_allclose(perfect['residual'], [0, 0], atol=1e-7)


def test_partial_suppression_and_normal_error_are_what_they_say():
  clean, defective, untouched = _pair()
  half = clean + 0.5 * (defective - clean)
  blurred = clean + 0.1 * untouched[..., None]  # wrong by 0.1 on normal pixels only
  m = suppression.measure(np.stack([half, blurred]), defective, clean, untouched)
  np.testing.assert_allclose(m['residual'], [0.5, 0.0], atol=1e-5)
  np.testing.assert_allclose(m['normal_error'], [0.0, 0.1], atol=1e-6)


def test_validation_json_has_the_per_depth_suppression(trained_run):
  val = files.json.loads((trained_run / 'validation.json').read_text())
  supp = val['suppression']
  depth = files.json.loads((trained_run / 'config.json').read_text())['model']['depth']
  for key in ('residual_R', 'residual_D', 'normal_error_R', 'normal_error_D'):
    assert len(supp[key]) == depth, key
    assert all(np.isfinite(supp[key])), key
  assert all(0 <= v for v in supp['residual_R'])
  assert supp['recon_source'] == 'dpn' and 0 <= supp['recon_image_auroc'] <= 100
  assert 0 <= val['border_share'] <= 1 and val['border_px'] == 8
  assert val['border_share_uniform'] == validation.uniform_border_share(16) == 1.0
  np.testing.assert_allclose(validation.uniform_border_share(64), 0.4375)
  # the configured score (gaussian, max) recomputed from the raw maps equals the detector's
  same = val['score_choices']['gaussian, max']
  for k in ('image_auroc', 'pixel_auroc', 'aupro'):
    np.testing.assert_allclose(same[k], val['metrics'][k], atol=1e-6)
  assert same['border_share'] == val['border_share'] and 'holdout' not in val


def test_validation_on_held_out_families(trained_run):
  """With crd_anomaly.holdout, validation also scores a set drawn from those families only."""
  ctx = evaluators.Context.of_run(trained_run, ["crd_anomaly.holdout=('crack', 'line')"],
                                  need_test=False)
  val = evaluators.validation.run(ctx)
  held = val['holdout']
  assert held['families'] == ['crack', 'line'] and 0 <= held['metrics']['image_auroc'] <= 100
  assert held['metrics'] != val['metrics']
  assert not (trained_run / 'eval').exists() or ctx.write is False


def test_region_balanced_loss_weighs_each_region_by_its_mean():
  target = jnp.zeros((2, 8, 8, 1))
  mask = jnp.zeros((2, 8, 8, 1)).at[:, :2, :2].set(1.0)  # 4 of 64 pixels
  pred = target + 0.5 * mask                              # wrong only inside the defect
  got = losses.region_balanced_l1(target, pred, mask, region_weight=3.0, grad_weight=0.0)
  np.testing.assert_allclose(got, 3.0 * 0.5, rtol=1e-5)   # plain mean would give 0.5 * 4/64
  pred = target + 0.25 * (1 - mask)                       # wrong only outside it
  got = losses.region_balanced_l1(target, pred, mask, region_weight=3.0, grad_weight=0.0)
  np.testing.assert_allclose(got, 0.25, rtol=1e-5)
  clean = losses.region_balanced_l1(target, target + 0.2, jnp.zeros_like(mask), 3.0, 1.0)
  np.testing.assert_allclose(clean, losses.l1_with_gradient(target, target + 0.2), rtol=1e-5)


def test_identity_noise_is_the_same_on_input_and_target():
  key = jax.random.PRNGKey(0)
  target = jnp.full((4, 8, 8, 1), 0.5)
  inputs = target.at[:, :3].set(0.45)
  noisy_in, noisy_tgt = anomalies.identity_noise(key, inputs, target, jnp.arange(4), 0.04)
  np.testing.assert_allclose(noisy_in - noisy_tgt, inputs - target, atol=1e-6)
  assert float(jnp.abs(noisy_tgt - target).max()) > 1e-3  # noise was added
  same = anomalies.identity_noise(key, inputs, target, jnp.arange(4), 0.0)
  assert same[0] is inputs and same[1] is target


def test_paper_objective_leaves_the_batch_untouched(tmp_path):
  config = tiny_config(tmp_path)
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3))
  stage = types.SimpleNamespace(restore=False, noise=0.0)
  x, target, mask = anomalies.restoration_pair(jax.random.PRNGKey(1), images, jnp.arange(2),
                                               None, config, stage)
  assert x is images and target is images and float(mask.max()) == 0.0


def test_skip_from_cuts_the_full_resolution_skip(tmp_path):
  """R_1 decodes at level 1 only: with skip_from=2 its output ignores the skip half of the
  decoder's second conv kernel (gradient exactly zero); with skip_from=1 it does not."""
  x = jax.random.uniform(jax.random.PRNGKey(1), (1, 16, 16, 3))
  for skip_from, cut in ((1, False), (2, True)):
    config = tiny_config(tmp_path, f'model.skip_from={skip_from}')
    model = model_lib.from_config(config)
    params = model.init('rcae', jax.random.PRNGKey(0))
    grads = jax.grad(lambda p: model.at_depth(p, x, 1).sum())(params)
    kernel = grads['params']['dec_0']['ConvNormAct_1']['Conv_0']['kernel']
    skip_part = jnp.abs(kernel[:, :, config.model.features:]).max()
    assert (float(skip_part) == 0.0) == cut, (skip_from, float(skip_part))


def test_border_share_counts_maxima_near_the_edge():
  maps = np.zeros((4, 32, 32))
  maps[0, 2, 16] = maps[1, 16, 30] = 1.0  # within 8 px of an edge
  maps[2, 16, 16] = maps[3, 8, 8] = 1.0   # inside (8 px in is no longer "within 8 px")
  assert validation.border_share(maps) == 0.5
  assert validation.border_share(maps[:2], width=1) == 0.0


def test_fae_noise_is_the_same_on_input_and_target(tmp_path):
  """FAE's objective: outside the corruption its input equals its (noisy) target, the noise
  is really there, and inside the mask the target is the clean image plus that noise."""
  config = tiny_config(tmp_path, 'method=fae', 'stages=(1,)', 'fae.noise=0.04',
                       'anomaly.min_opacity=1.0')
  images = jax.random.uniform(jax.random.PRNGKey(0), (4, 16, 16, 3), minval=0.2, maxval=0.8)
  bank = jnp.asarray(anomalies.texture_bank(16, 3, seed=0))
  inp, tgt, mask = anomalies.restoration_pair(jax.random.PRNGKey(1), images, jnp.arange(4),
                                              bank, config, config.fae)
  outside = np.asarray(mask[..., 0]) == 0
  assert outside.any() and (~outside).any()
  np.testing.assert_allclose(np.asarray(inp)[outside], np.asarray(tgt)[outside], atol=1e-6)
  noise = np.asarray(tgt - images)
  assert np.abs(noise).max() > 1e-3 and np.abs(noise.mean()) < 0.01
  # the objective restores exactly such a pair: with an identity network its loss is the
  # region-balanced error of the noisy corrupted input against the noisy clean target
  identity = types.SimpleNamespace(reconstruct=lambda params, x: x)
  objective = methods.stage(config, 1).objective(identity, config)
  rng = jax.random.PRNGKey(5)
  loss, _ = objective(None, {'textures': bank}, {'image': images, 'index': jnp.arange(4)}, rng)
  i2, t2, m2 = anomalies.restoration_pair(jax.random.fold_in(rng, 2), images, jnp.arange(4),
                                          bank, config, config.fae)
  expected = losses.region_balanced_l1(t2, i2, m2, 1.0, config.grad_weight)
  assert float(expected) > 0.01
  np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_normal_gap_known_answers():
  rng = np.random.default_rng(0)
  a = rng.random(200)
  same = validation.gap(a, a * 2, a.copy(), a * 2)
  assert same['ks'] == 0 and same['ratio_p99'] == 1
  assert all(v == pytest.approx(1) for v in same['ratio'].values())
  # disjoint sets: KS 1; 0..999 against 500..1499: the ECDFs differ by at most 500/1000
  assert validation.gap(a, a, a + 2, a)['ks'] == 1
  grid = np.arange(1000.0) + 1
  assert validation.gap(grid, grid, grid + 500, grid)['ks'] == 0.5
  doubled = validation.gap(a, a, 2 * a, 3 * a)
  assert doubled['ratio_p99'] == pytest.approx(2) and doubled['ratio']['map_p99_median'] == (
      pytest.approx(3))
  assert doubled['train']['n'] == doubled['heldout']['n'] == 200


def test_every_run_writes_its_normal_gap(trained_run):
  gap = files.read_json(trained_run / 'validation.json')['normal_gap']
  assert gap['train']['n'] > gap['heldout']['n'] > 0  # every training normal, the held-out ones
  assert 0 <= gap['ks'] <= 1 and gap['ratio_p99'] > 0
  assert gap['ratio_p99'] == pytest.approx(gap['heldout']['score_p99'] / gap['train']['score_p99'])
