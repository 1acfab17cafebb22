"""Killed anywhere (SIGKILL at chosen points, in a subprocess), resumed by re-running the same
command: the same per-step losses, parameters and result files as a run never interrupted."""
import csv
import json
import os
import signal
import subprocess
import sys

import chex
import numpy as np
import pytest

from conftest import ROOT, own_copy, shared
from rcae_jax import checkpoints, crossfit, files
from rcae_jax import config as config_lib
from rcae_jax.data import batches

# depth_sampling=max: one stage-1 program for every start to trace (tracing and lowering the
# stage's program is the largest part of a restart); stage 1's per-depth schedule is resumed
# exactly in test_train.py::test_resume_after_interruption_is_exact
_SET = ['data.resolution=16', 'model.depth=2', 'depth_sampling=max', 'stage1.steps=6',
        'stage2.steps=4', 'stage3.steps=4', 'log_every=1', 'ckpt_every=2']
# The killed runs are cross-fitted (two folds): stages 1-2 on every image, then once per fold
# on the other fold (fold<f>/stage<k>/), then stage 3 on out-of-fold reconstructions; the
# plain path is the same code without the fold stages.
_CROSSFIT = ['crossfit.folds=2']
# Where the kills land, in the order one run meets them: between stages (stage 1's last
# checkpoint is then damaged), inside stage 2, inside a fold's stage 1 between saves, with a
# fold's first stage-2 save in flight, between the folds, inside the next fold, with stage
# 3's last save in flight after a complete one, between the bundle's params and its config,
# and in the middle of writing validation.json. Every stage runs the one loop
# (`training.train_stage`, kill points named by the stage), so plain and fold stages share
# each kind of point; each start costs ~10 % of this test's time.
KILLS = ('after-stage1', 'stage2:step3', 'fold0/stage1:step5', 'fold0/stage2:saving2',
         'after-fold0/stage2', 'fold1/stage1:step3', 'stage3:saving4', 'bundle',
         'write:validation.json')


def _start(args, kill_at=None):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop('RCAE_KILL_AT', None)
  if kill_at:
    env['RCAE_KILL_AT'] = kill_at
  return subprocess.Popen([sys.executable, '-m', 'rcae_jax', *args], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=300):
  """-> CompletedProcess of a started command (killed if it outlives timeout)."""
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _cli(args, kill_at=None, timeout=300):
  return _finish(_start(args, kill_at), timeout)


def _train(workdir, cache, kill_at=None):
  return _cli(['train', '--config', 'tiny', '--workdir', str(workdir), '--set', *_SET,
               *_CROSSFIT, f'data.cache_dir={cache}'], kill_at)


_STAGES = ('stage1', 'stage2', 'fold0/stage1', 'fold0/stage2', 'fold1/stage1', 'fold1/stage2',
           'stage3')


def _losses(workdir):
  return {s: [(r['step'], r['loss']) for r in files.read_jsonl(workdir / s / 'metrics.jsonl')]
          for s in _STAGES}


def _killed(proc, point):
  assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr[-2000:])


def _reference(folder):
  proc = _train(folder / 'ref', folder / 'cache')
  assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """The uninterrupted cross-fitted run (ref/) and its data cache, trained once per session;
  each worker gets its own copy (a test evaluates into ref/)."""
  return own_copy(tmp_path_factory, shared(tmp_path_factory, 'preempt', _reference))


def _damage(step_dir):
  for f in step_dir.rglob('*'):
    if f.is_file() and f.stat().st_size > 64:
      f.write_bytes(b'\0' * 16)  # a damaged disk


def test_killed_at_every_point_resumes_exactly(uninterrupted):
  """Also a damaged checkpoint: after the kill between stages, stage 1's last step directory
  exists but cannot be read; it is never loaded, the next start resumes stage 1 from the
  step before it, and the run still ends where an uninterrupted run ends."""
  ref, wd, cache = uninterrupted / 'ref', uninterrupted / 'killed', uninterrupted / 'cache'
  for point in KILLS:
    proc = _train(wd, cache, kill_at=point)
    _killed(proc, point)
    bundle = (wd / 'model' / 'config.json').exists()  # present only once the params are
    assert bundle == (point == 'write:validation.json'), point
    if point == 'after-stage1':
      steps = sorted(int(p.name) for p in (wd / 'stage1' / 'ckpt').iterdir() if p.name.isdigit())
      assert steps == [4, 6]  # the last two are kept
      _damage(wd / 'stage1' / 'ckpt' / '6')
    if point == 'stage2:step3':  # the start after the damage
      assert 'stage1/ckpt/6 is incomplete or damaged' in proc.stdout, proc.stdout[-2000:]
      assert 'resuming from step 4' in proc.stdout
  proc = _train(wd, cache)
  assert proc.returncode == 0, proc.stderr[-2000:]
  losses = _losses(wd)
  assert losses == _losses(ref)
  for stage, steps in (('stage1', 6), ('fold1/stage1', 6), ('stage3', 4)):  # each logged once
    assert [s for s, _ in losses[stage]] == list(range(1, steps + 1)), stage
  _, params = checkpoints.load_bundle(wd)
  chex.assert_trees_all_equal(params, checkpoints.load_bundle(ref)[1])
  for name in ('validation.json', 'calibration.json'):
    assert json.loads((wd / name).read_text()) == json.loads((ref / name).read_text()), name
  leftovers = [p.name for p in wd.rglob('*') if '.tmp' in p.name or 'tmp' in p.suffix]
  assert not leftovers, leftovers


def test_crossfitted_stage3_learns_only_from_out_of_fold_reconstructions(uninterrupted):
  """Which model reconstructed which image: fold f's networks trained on crossfit.json's
  trained_on[f] (the stream each read, recomputed), and every stage-3 step read a batch of
  fold-f images only, through fold f's networks (the 'fold' its step logged)."""
  ref = uninterrupted / 'ref'
  info = json.loads((ref / 'crossfit.json').read_text())
  fold_of = np.asarray(info['fold_of_image'])
  assert info['folds'] == 2 and abs(int((fold_of == 0).sum()) - int((fold_of == 1).sum())) <= 1
  members = crossfit.members(fold_of)
  config = config_lib.load_config('tiny', [*_SET, *_CROSSFIT])
  b = config.batch_size
  for f in (0, 1):
    trained_on = np.asarray(info['trained_on'][f'fold{f}'])
    np.testing.assert_array_equal(trained_on, np.flatnonzero(fold_of != f))
    steps = len(files.read_jsonl(ref / f'fold{f}' / 'stage1' / 'metrics.jsonl'))
    seen = trained_on[batches.batch_indices(len(trained_on), b * steps, config.data.seed, 0)]
    assert not set(seen.tolist()) & set(members[f].tolist())
  stream = batches.FoldStream(np.zeros((len(fold_of), 1)), config.data.seed, b, members)
  records = files.read_jsonl(ref / 'stage3' / 'metrics.jsonl')
  assert [r['fold'] for r in records] == [float(r['step'] - 1) % 2 for r in records]
  for r in records:
    s = r['step'] - 1
    read = [stream.image_index(p) for p in range(s * b, (s + 1) * b)]
    assert {fold for _, fold in read} == {r['fold']}
    assert {i for i, _ in read} <= set(members[int(r['fold'])].tolist())
    assert not {i for i, _ in read} & set(info['trained_on'][f'fold{int(r["fold"])}'])
  val = json.loads((ref / 'validation.json').read_text())
  assert 'out-of-fold' in val['normal_gap']['train_scored_by']
  assert set(val['crossfit_infer']) == {'full', 'folds'}
  assert val['crossfit_infer']['full'] == {k: v for k, v in val['metrics'].items()
                                           if k != 'bounds'}
  assert val['crossfit_infer']['folds'] != val['crossfit_infer']['full']


def test_evaluate_killed_while_writing_is_rerun_cleanly(uninterrupted):
  ref = uninterrupted / 'ref'
  _killed(_cli(['evaluate', '--workdir', str(ref)], kill_at='write:metrics.json'),
          'write:metrics.json')
  assert not (ref / 'eval' / 'metrics.json').exists()  # never half a file
  proc = _cli(['evaluate', '--workdir', str(ref)])
  assert proc.returncode == 0, proc.stderr[-2000:]
  first = json.loads((ref / 'eval' / 'metrics.json').read_text())
  assert _cli(['evaluate', '--workdir', str(ref)]).returncode == 0
  assert json.loads((ref / 'eval' / 'metrics.json').read_text()) == first
  assert not [p.name for p in (ref / 'eval').iterdir() if '.tmp' in p.name]


def test_damaged_result_files_are_named(uninterrupted, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  wd = tmp_path / 'run'
  shutil.copytree(uninterrupted / 'ref', wd)
  (wd / 'validation.json').write_text('{"metrics": {"image_')
  proc = _cli(['evaluate', '--workdir', str(wd)])
  assert proc.returncode == 2 and f'{wd / "validation.json"}: not valid JSON' in proc.stderr
  (wd / 'model' / 'config.json').write_text('')
  proc = _cli(['evaluate', '--workdir', str(wd)])
  assert proc.returncode == 2 and 'model/config.json: not valid JSON' in proc.stderr


def test_sweep_killed_mid_variant_gives_the_same_tables(uninterrupted, tmp_path):
  """A sweep killed inside its second variant and run again skips the finished variant,
  resumes the other, and writes the tables an uninterrupted sweep writes."""
  preset = tmp_path / 'preset.py'
  preset.write_text(
      'def get_sweep():\n  return {"config": "tiny.py", "variants": [\n'
      '    ("+RcAE", ["stages=(1,)"]),\n    ("+RcAE +DPN", ["stages=(1, 2)"])]}\n')
  args = lambda wd: ['sweep', str(preset), '--workdir', str(wd), '--set', *_SET,
                     f'data.cache_dir={uninterrupted / "cache"}']
  ref = _start(args(tmp_path / 'ref'))  # alongside the killed one: compiling is one core's work
  _killed(_cli(args(tmp_path / 'killed'), kill_at='stage2:step3'), 'stage2:step3')
  ref = _finish(ref)
  assert ref.returncode == 0, ref.stderr[-2000:]
  again = _cli(args(tmp_path / 'killed'))
  assert again.returncode == 0, again.stderr[-2000:]
  assert 'finished earlier, skipped' in again.stdout
  table = lambda wd: (wd / 'results.md').read_text()
  assert table(tmp_path / 'killed') == table(tmp_path / 'ref')
  rows = lambda wd: [{k: v for k, v in r.items() if k not in ('status', 'seconds', 'dir', 'reused')}
                     for r in csv.DictReader(open(wd / 'results.csv'))]
  assert rows(tmp_path / 'killed') == rows(tmp_path / 'ref')
  assert len(rows(tmp_path / 'ref')) == 2
