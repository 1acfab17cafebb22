"""Sweeps (tables, skip finished, record failures) and recursion dynamics."""
import csv
import json

import numpy as np
import pytest

from conftest import ROOT
from rcae_jax import config as config_lib
from rcae_jax import anomalies, evaluators, sweep
from rcae_jax.evaluators import dynamics


def _tiny_preset(tmp_path, extra_variant=None):
  variants = [
      ("'+RcAE'", "['stages=(1,)', 'stage1.steps=20']"),
      ("'+RcAE +DPN'", "['stages=(1, 2)', 'stage1.steps=20', 'stage2.steps=5']"),
  ] + ([extra_variant] if extra_variant else [])
  text = ('def get_sweep():\n  return {"config": %r, "variants": [%s]}\n' % (
      str(ROOT / 'experiments/configs/tiny.py'), ', '.join(f'({n}, {o})' for n, o in variants)))
  path = tmp_path / 'preset.py'
  path.write_text(text)
  return path


def test_sweep_tables_skip_and_failure(tmp_path):
  preset = _tiny_preset(tmp_path, ("'broken'", "['stages=(1,)', 'data.name=folder', "
                                              "'data.root=/does/not/exist']"))
  wd = tmp_path / 'sweep'
  # N = 2 at 16², as the shared tiny run: its programs come from the compilation cache
  ov = ['data.resolution=16', 'model.depth=2', f'data.cache_dir={tmp_path / "cache"}']
  rows = sweep.run(preset, wd, ov)
  assert [r['status'] for r in rows][:2] == ['ok', 'ok'] and rows[2]['status'].startswith('failed')
  # '+RcAE +DPN' trains stage 1 exactly as '+RcAE' did: copied, not trained again
  assert rows[1]['reused'].startswith('stage 1-1 from') and 'reused' not in rows[0]
  log = lambda v: (wd / v / 'brick' / 'stage1' / 'metrics.jsonl').read_text()
  assert log('RcAE_DPN') == log('RcAE')
  assert '/does/not/exist' in (wd / 'broken' / 'brick' / 'error.txt').read_text()
  table = (wd / 'results.md').read_text()
  assert '| +RcAE +DPN |' in table and 'Failed runs' in table
  csv_rows = list(csv.DictReader(open(wd / 'results.csv')))
  assert len(csv_rows) == 3 and float(csv_rows[0]['image_auroc']) > 0
  assert (wd / 'results.png').stat().st_size > 0
  again = sweep.run(preset, wd, ov[:2] + [f'data.cache_dir={tmp_path / "moved"}'])
  assert [r['status'] for r in again][:2] == ['skipped (done)'] * 2
  assert again[0]['image_auroc'] == rows[0]['image_auroc']
  # the preset edited after the fact: its finished run is not reported under the new meaning
  preset.write_text(preset.read_text().replace("'stage1.steps=20']", "'stage1.steps=30']", 1))
  edited = sweep.run(preset, wd, ov)
  assert edited[0]['status'].startswith('failed') and 'stage1.steps' in edited[0]['status']
  assert 'the preset changed' in edited[0]['status'] and 'image_auroc' not in edited[0]
  assert edited[1]['status'] == 'skipped (done)'


def test_every_preset_expands_to_valid_configs():
  for path in sorted((sweep.config_lib.experiments_dir() / 'sweeps').glob('*.py')):
    preset = sweep.load_preset(path.stem)
    assert preset['variants'], path
    base = sweep.config_lib.load_config(preset['config'])
    configs = sweep.expand(preset, base)
    assert len(configs) == len(preset['variants'])


def test_the_chosen_rows_are_todays_config():
  """A study's chosen row is today's `mtd.py:cpu` (what it measured then is its commit's)."""
  cpu = sweep.config_lib.load_config('mtd:cpu')
  for name in ('restoring', 'padding'):
    (_, _), (_, chosen) = sweep.expand(sweep.load_preset(name), cpu)
    assert sweep.config_lib.same_run(chosen, cpu), name
  rows = dict(sweep.expand(sweep.load_preset('schedule'), cpu))
  chosen = [v for name, v in rows.items() if '(chosen, default)' in name]
  assert len(chosen) == 1 and sweep.config_lib.same_run(chosen[0], cpu)


def test_dynamics_curves_and_files(trained_run):
  ctx = evaluators.Context.of_run(trained_run, max_images=8)
  result = evaluators.run(evaluators.DYNAMICS, ctx)['dynamics']
  assert result['n_images'] == 8
  n = result['depth']
  assert len(result['R']['error_anomalous']) == n and len(result['R']['change_ratio']) == n - 1
  assert len(result['D']['error_normal']) == n
  on_disk = json.loads((trained_run / 'dynamics' / 'dynamics.json').read_text())
  np.testing.assert_allclose(on_disk['R']['error_ratio'], result['R']['error_ratio'])
  assert len(result['suppression']['residual_R']) == n == len(on_disk['suppression']['residual_D'])
  for name in ('error_R.png', 'change_R.png', 'error_D.png', 'strip_0.png', 'suppression.png'):
    assert (trained_run / 'dynamics' / name).stat().st_size > 0


def test_curves_on_a_known_sequence():
  x = np.zeros((1, 4, 4, 1), np.float32)
  masks = np.zeros((1, 4, 4), bool)
  masks[0, 0, 0] = True
  seq = np.zeros((3, 1, 4, 4, 1), np.float32)
  seq[:, 0, 0, 0, 0] = [0.1, 0.3, 0.6]  # the defect pixel keeps moving
  seq[:, 0, 1:, :, 0] = 0.05            # normal pixels settle at once
  c = dynamics.curves(seq, x, masks)
  np.testing.assert_allclose(c['change_anomalous'], [0.2, 0.3], atol=1e-6)
  np.testing.assert_allclose(c['change_normal'], [0, 0], atol=1e-7)
  np.testing.assert_allclose(c['error_anomalous'], [0.1, 0.3, 0.6], atol=1e-6)


def test_stage_reuse_needs_every_key_the_stage_reads():
  a = {'model.depth': 3, 'stages': [1], 'model.crd_diff': True, 'stage2.steps': 5}
  assert config_lib.same_run(a, {**a, 'stages': [1, 2], 'stage2.steps': 9}, for_stage=1)
  assert not config_lib.same_run(a, {**a, 'model.depth': 4}, for_stage=1)
  assert not config_lib.same_run(a, {**a, 'stage2.steps': 9}, for_stage=2)
  assert config_lib.same_run(a, {**a, 'model.crd_diff': False}, for_stage=2)
  assert not config_lib.same_run(a, {**a, 'model.crd_diff': False}, for_stage=3)
  assert config_lib.same_run(a, {**a, 'model.crd_image': False}, for_stage=2)
  assert not config_lib.same_run(a, {**a, 'model.crd_image': False}, for_stage=3)
  assert not config_lib.same_run(a, {k: v for k, v in a.items() if k != 'model.depth'}, for_stage=1)


def test_generalisation_preset_holds_out_families():
  preset = sweep.load_preset('generalisation')
  configs = dict(sweep.expand(preset, config_lib.load_config('mtd:cpu')))
  assert configs['all families'].crd_anomaly.holdout == ()
  thin = configs['without thin shapes']
  assert thin.crd_anomaly.holdout == ('line', 'curve', 'crack')
  assert set(anomalies.generator(thin)['shapes']) == {'patch', 'blob', 'perlin', 'fae'}
  # stages 1-2 are the same computation in every variant: trained once, then copied
  a, b = config_lib.flat(configs['all families']), config_lib.flat(thin)
  assert config_lib.same_run(a, b, for_stage=1) and config_lib.same_run(a, b, for_stage=2)
  assert not config_lib.same_run(a, b, for_stage=3)
  # a scoring change trains nothing: every stage is copied
  scored = config_lib.flat(config_lib.apply_overrides(configs['all families'],
                                                      ['score.image=topk']))
  assert all(config_lib.same_run(a, scored, for_stage=s) for s in (1, 2, 3))


def test_border_profile_on_known_rings():
  from experiments import border_profile  # pylint: disable=g-import-not-at-top
  side = 8
  dist = border_profile.distance_to_border(side)
  np.testing.assert_array_equal(dist[0], [0, 0, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(dist[3], [0, 1, 2, 3, 3, 2, 1, 0])
  images = np.repeat((10 * dist)[None, ..., None], 2, axis=0).astype(np.uint8)
  recon = images.astype(np.float32) / 255.0
  recon[:, dist == 0] += 0.1  # the reconstruction misses only the outermost ring
  smoothed = np.zeros((2, side, side), np.float32)
  smoothed[0, 0, 4], smoothed[1, 3, 3] = 1.0, 1.0  # maxima on ring 0 and ring 3
  out = {'recon': recon[None], 'raw': smoothed, 'map': smoothed}
  p = border_profile.profile(images, out, rings=2)
  np.testing.assert_allclose(p['image_mean'], [0, 10, 22.5])  # interior: 12 px at 20, 4 at 30
  np.testing.assert_allclose(p['recon_error'], [0.1, 0, 0], atol=1e-6)
  np.testing.assert_allclose(p['argmax_share'], [0.5, 0, 0.5])
  assert p['border_share'] == 1.0  # every pixel of an 8² image is within 8 px of its border
  assert p['image_contrast'][2] < p['image_contrast'][0]
  with pytest.raises(ValueError, match='rings=4: a 8² image has no pixel 4 px'):
    border_profile.profile(images, out, rings=4)


def test_border_profile_of_kept_aspect_images_counts_from_the_box():
  """Rings from each image's content box; the padding, here holding every map's maximum and
  the worst reconstruction, is in no number."""
  from experiments import border_profile  # pylint: disable=g-import-not-at-top
  boxes = np.array([[0, 2, 8, 4], [1, 0, 6, 8]])  # (top, left, height, width) in 8²
  dist = border_profile.distance_to_box(boxes, 8, 8)
  np.testing.assert_array_equal(dist[0, 3], [-1, -1, 0, 1, 1, 0, -1, -1])
  np.testing.assert_array_equal(dist[1, :, 3], [-1, 0, 1, 2, 2, 1, 0, -1])
  inner = np.zeros((2, 8, 8, 1), np.uint8)
  for i, (t, l, h, w) in enumerate(boxes):  # the same image in both boxes: 10 x ring
    inner[i, t:t + h, l:l + w, 0] = 10 * border_profile.distance_to_border(h, w)
  images = np.where(dist[..., None] >= 0, inner, 255).astype(np.uint8)
  recon = images.astype(np.float32) / 255.0
  recon[dist < 0] = 0.0  # the padding reconstructed worst (error 1)
  smoothed = np.where(dist == 1, 0.5, 0.0).astype(np.float32)
  smoothed[dist < 0] = 9.0  # the padding's map highest
  out = {'recon': recon[None], 'raw': smoothed, 'map': smoothed}
  p = border_profile.profile(images, out, rings=1, boxes=boxes)
  # ring 0: 20 + 24 px at 0; inside: 12 px at 10 (8x4 box), 16 at 10 and 8 at 20 (6x8)
  np.testing.assert_allclose(p['image_mean'], [0, 440 / 36])
  np.testing.assert_allclose(p['recon_error'], [0, 0], atol=1e-6)
  assert p['argmax_share'] == [0.0, 1.0]  # each maximum on its box's ring 1, not the padding
  assert p['map_p99'][0] == 0.0
  assert p['border_share'] == 1.0  # within 8 px of its box's edge


def test_border_profile_of_a_run_writes_its_files(trained_run):
  from experiments import border_profile  # pylint: disable=g-import-not-at-top
  border_profile.main([str(trained_run), '--train', '6'])
  result = json.loads((trained_run / 'border_profile.json').read_text())
  ctx = evaluators.Context.of_run(trained_run, need_test=False)
  assert result['train']['n_images'] == 6
  assert result['held_out']['n_images'] == len(ctx.dataset.val)
  for s in ('train', 'held_out'):
    assert len(result[s]['map_p99']) == result['rings'] + 1
    assert abs(sum(result[s]['argmax_share']) - 1) < 1e-9
  assert (trained_run / 'border_profile.png').stat().st_size > 0
  assert 'held_out' in (trained_run / 'border_profile.md').read_text()
  with pytest.raises(SystemExit, match='no finished model'):
    border_profile.main([str(trained_run / 'missing')])


def _line_dataset(root):
  """A folder dataset of flat grey 128² tiles; 'line' defects are a dark line 2 px wide
  (columns 63-64: a 32² pixel covers a quarter of it on each side), 'square' a 32 px
  square."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  flat = np.full((128, 128), 128, np.uint8)
  for d in ('train', 'test/good', 'test/line', 'test/square', 'ground_truth/line',
            'ground_truth/square'):
    (root / d).mkdir(parents=True)
  for i in range(4):
    Image.fromarray(flat).save(root / 'train' / f'{i}.png')
  Image.fromarray(flat).save(root / 'test' / 'good' / '0.png')
  for defect, (rows, cols) in {'line': (slice(16, 112), slice(63, 65)),
                               'square': (slice(48, 80), slice(48, 80))}.items():
    image, mask = flat.copy(), np.zeros_like(flat)
    image[rows, cols], mask[rows, cols] = 60, 255
    Image.fromarray(image).save(root / 'test' / defect / '0.png')
    Image.fromarray(mask).save(root / 'ground_truth' / defect / '0_mask.png')


def test_defect_visibility_known_answers(tmp_path, capsys):
  from experiments import defect_visibility  # pylint: disable=g-import-not-at-top
  _line_dataset(tmp_path / 'tiles')
  out = tmp_path / 'vis'
  defect_visibility.main(['--config', 'tiny', '--data', f'folder:{tmp_path / "tiles"}',
                          '--resolutions', '32', '128', '--normals', '2', '--out', str(out),
                          '--ring', '3'])
  by = json.loads((out / 'visibility.json').read_text())['by_resolution']
  line, square = {r: by[r]['line'] for r in by}, {r: by[r]['square'] for r in by}
  # the 2 px line: kept at full size, lost at 32² (a quarter of each pixel); width scales
  assert line['128']['kept'] == 1.0 and line['32']['kept'] == 0.0
  assert abs(line['128']['width_px'] - 2.0) < 0.1 and abs(line['32']['width_px'] - 0.5) < 0.03
  np.testing.assert_allclose([line['128']['area_px'], line['32']['area_px']], [192, 12])
  # contrast: 68 grey levels at full size, a quarter of it where the line is blended
  np.testing.assert_allclose([line['128']['contrast'], line['32']['contrast']], [68, 17])
  assert line['32']['contrast_normal'] == 0 and line['32']['separability'] == 100
  assert square['32']['kept'] == 1.0 and square['32']['contrast'] == 68
  assert square['128']['width_px'] == 32 and square['32']['width_px'] == 8
  assert '| line | 1 |' in (out / 'visibility.md').read_text()
  assert (out / 'visibility.png').stat().st_size > 0
  with pytest.raises(SystemExit):
    defect_visibility.main(['--data', 'folder:x', '--ring', '0', '--out', str(out)])
  assert '--ring must be at least 1, got 0' in capsys.readouterr().err
  with pytest.raises(SystemExit, match='does not exist'):
    defect_visibility.main(['--data', f'folder:{tmp_path / "none"}', '--out', str(out)])


def test_a_table_row_with_more_cells_than_its_header_is_refused():
  """A column added to the cells but not the header would shift every later cell under the
  wrong name (it did, once, in the sweep's validation table)."""
  from rcae_jax import tables  # pylint: disable=g-import-not-at-top
  assert tables.markdown(['a', 'b'], [['x', 1.0]]).splitlines()[-1] == '| x | 1.0 |'
  with pytest.raises(ValueError, match="header's 2 cells"):
    tables.markdown(['a', 'b'], [['x', 1.0, 2.0]])


def test_score_fusion_known_answers_and_the_runs_own_validation(trained_run):
  """fuse/scale by hand; on the shared run, the two maps alone give validation.json's own
  detector and reconstruction-error metrics (the same set, the same scoring)."""
  from experiments import score_fusion  # pylint: disable=g-import-not-at-top
  a, b = np.array([[[1.0, 3.0]]]), np.array([[[10.0, 0.0]]])
  np.testing.assert_allclose(score_fusion.fuse(a, b, 2.0, 10.0, 0.5), [[[0.75, 0.75]]])
  np.testing.assert_allclose(score_fusion.fuse(a, b, 4.0, 1.0, 0.0), a / 4)
  raw = np.arange(32, dtype=np.float32).reshape(2, 4, 4)
  assert score_fusion.scale(None, raw, 'p99_pixel') == np.percentile(raw, 99)
  out = score_fusion.study(trained_run, weights=(0.5,))
  val = json.loads((trained_run / 'validation.json').read_text())
  crd, rec = out['rows']['CRD alone (the run)'], out['rows'][f'{out["recon_source"]} error alone']
  assert crd['image_auroc'] == pytest.approx(val['metrics']['image_auroc'], abs=1e-6)
  assert rec['image_auroc'] == pytest.approx(val['suppression']['recon_image_auroc'], abs=1e-6)
  assert crd['aupro'] == pytest.approx(val['metrics']['aupro'], abs=0.5)
  assert len(out['rows']) == 2 + len(score_fusion.SCALES)
  assert (trained_run / 'score_fusion.md').read_text().count('\n') == 2 + len(out['rows'])


def test_recon_gap_errors_on_known_reconstructions():
  from experiments import recon_gap  # pylint: disable=g-import-not-at-top
  images = np.full((2, 4, 6, 1), 102, np.uint8)  # 0.4
  x = images.astype(np.float32) / 255.0
  recon = np.stack([x + 0.01, x - 0.03])  # (S=2, B, H, W, C)
  signs = np.where(np.indices((4, 6)).sum(0) % 2 == 0, 1.0, -1.0)[None, :, :, None]  # (1, H, W, 1)
  enhanced = np.stack([x + 0.02 * signs, x + 0.05])
  out = recon_gap.errors(images, recon, enhanced)
  np.testing.assert_allclose(out['rcae_abs'], [[0.01, 0.01], [0.03, 0.03]], atol=1e-6)
  np.testing.assert_allclose(out['dpn_abs'], [[0.02, 0.02], [0.05, 0.05]], atol=1e-6)
  np.testing.assert_allclose(out['dpn_std'], [[0.02, 0.02], [0.0, 0.0]], atol=1e-5)
  # padding (valid False) is left out: a huge error there changes nothing
  valid = np.ones((2, 4, 6), bool)
  valid[:, :, 4:] = False
  recon[:, :, :, 4:] = 1.0
  out = recon_gap.errors(images, recon, None, valid)
  assert set(out) == {'rcae_abs'}
  np.testing.assert_allclose(out['rcae_abs'], [[0.01, 0.01], [0.03, 0.03]], atol=1e-6)
