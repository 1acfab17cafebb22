"""The commands a user runs: train/evaluate/predict through the CLI, and clear refusals."""
import csv
import json
import os
import shutil

import jax
import numpy as np
import pytest

from conftest import ROOT
import rcae_jax
from rcae_jax import __main__ as cli
from rcae_jax import api, checkpoints, inference, metrics, parallel, runinfo
from rcae_jax import data as data_lib


def test_evaluate_writes_metrics_tables_and_pictures(trained_run, capsys):
  assert cli.main(['evaluate', '--workdir', str(trained_run)]) == 0
  out = capsys.readouterr().out
  assert '| category |' in out
  result = json.loads((trained_run / 'eval' / 'metrics.json').read_text())
  assert set(result) >= {'per_category', 'mean', 'per_defect'}
  assert set(result['mean']) == set(metrics.METRICS) | {'bounds'}  # histogram error bounds
  assert all(0 <= b < 0.1 for b in result['mean']['bounds'].values())
  assert all(0 <= result['mean'][k] <= 100 for k in metrics.METRICS)
  assert set(result['per_defect']['brick']) == {'scratch', 'texture'}
  ds = data_lib.load(checkpoints.load_bundle(trained_run)[0], need_test=True)
  empty = (ds.test_labels == 1) & ~np.asarray(ds.test_masks).any(axis=(1, 2))
  assert result['empty_masks']['n'] == int(empty.sum())
  assert sum(result['empty_masks']['per_defect'].values()) == int(empty.sum())
  for name in ('metrics.md', 'heatmaps.png', 'sequence_0.png'):
    assert (trained_run / 'eval' / name).stat().st_size > 0
  machine = runinfo.describe_machine(runinfo.environment())  # 4 virtual CPU devices here
  assert machine.startswith('4 × cpu')
  assert f'on {machine}; evaluated by' in (trained_run / 'eval' / 'metrics.md').read_text()


def test_one_inference_path(trained_run, tmp_path):
  """evaluate's metrics are those of inference.run's scores and maps (the path predict and
  bench use), on one device or four, in any batch size: streamed batch by batch into
  histograms, they equal the histogram of all maps at once, and the exact metrics to
  within the reported bound."""
  config, params = checkpoints.load_bundle(trained_run)
  assert config.eval_pixel_bits == 20
  ds = data_lib.load(config, need_test=True)
  out = inference.run(config, params, ds.test)
  whole = metrics.PixelCurves(20).add(out['map'], ds.test_masks)
  expected = metrics.streamed_metrics(out['score'], ds.test_labels, whole)
  exact = metrics.compute_metrics(out['score'], ds.test_labels, out['map'], ds.test_masks)
  run = tmp_path / 'run'
  shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns('eval', 'stage*'))
  result = api.evaluate(run)
  for got in (result['mean'], json.loads((run / 'eval' / 'metrics.json').read_text())['mean']):
    for k in metrics.METRICS:
      assert got[k] == pytest.approx(expected[k], abs=1e-9)
      assert abs(got[k] - exact[k]) <= got['bounds'].get(k, 0) + 1e-9
  one = inference.run(config, params, ds.test, batch_size=5,
                      mesh=parallel.make_mesh(jax.devices()[:1]))
  assert jax.device_count() == 4
  np.testing.assert_allclose(one['score'], out['score'], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(one['map'], out['map'], rtol=1e-5, atol=1e-6)


def test_predict_writes_maps_and_decisions(trained_run, tmp_path):
  config, params = checkpoints.load_bundle(trained_run)
  ds = data_lib.load(config, need_test=True)
  folder = ds.test_names[0].rsplit('/', 1)[0]
  assert cli.main(['predict', '--workdir', str(trained_run), folder, '--out', str(tmp_path)]) == 0
  rows = list(csv.DictReader(open(tmp_path / 'scores.csv')))
  assert rows and {r['decision'] for r in rows} <= {'normal', 'anomalous'}
  cal = json.loads((trained_run / 'calibration.json').read_text())
  assert all(float(r['threshold']) == pytest.approx(cal['threshold'], rel=1e-5) for r in rows)
  idx = [ds.test_names.index(r['image']) for r in rows]
  expected = inference.run(config, params, ds.test[idx])['score']
  np.testing.assert_allclose([float(r['score']) for r in rows], expected, rtol=1e-4)
  # one map per input, its path mirroring the input's (rcae_jax/predict.py)
  assert len(list((tmp_path / 'maps').rglob('*.png'))) == len(rows)
  assert all((tmp_path / r['map']).is_file() for r in rows)


def test_retrain_resumes_instead_of_starting_over(trained_run, capsys):
  cfg = json.loads((trained_run / 'config.json').read_text())
  before = (trained_run / 'stage1' / 'metrics.jsonl').read_text()
  overrides = [f'data.size={tuple(cfg["data"]["size"])}', f'model.depth={cfg["model"]["depth"]}',
               f'data.cache_dir={cfg["data"]["cache_dir"]}',
               *[f'stage{s}.steps={cfg[f"stage{s}"]["steps"]}' for s in (1, 2, 3)]]
  assert cli.main(['train', '--config', str(ROOT / 'experiments/configs/tiny.py'),
                   '--workdir', str(trained_run), '--set', *overrides]) == 0
  assert (trained_run / 'stage1' / 'metrics.jsonl').read_text() == before


@pytest.mark.parametrize('argv,match', [
    (['train', '--workdir', 'x', '--set', 'model.dpeth=3'], "unknown config key 'model.dpeth'"),
    (['train', '--workdir', 'x', '--data', 'mtd'], 'data.root is empty'),
    (['train', '--workdir', 'x', '--data', 'mvtec:/does/not/exist'], 'does not exist'),
    (['evaluate', '--workdir', '/no/such/run'], 'no finished model'),
    (['train', '--workdir', 'x', '--set', 'batch_size=7'],
     'batch_size=7 cannot be split over 4 devices'),
])
def test_cli_refuses_with_a_message(argv, match, capsys, tmp_path):
  argv = [a.replace('x', str(tmp_path / 'w')) if a == 'x' else a for a in argv]
  assert cli.main(argv) == 2
  assert match in capsys.readouterr().err


def test_resuming_with_another_config_is_refused(trained_run, capsys):
  assert cli.main(['train', '--config', str(ROOT / 'experiments/configs/tiny.py'),
                   '--workdir', str(trained_run), '--set', 'model.features=8']) == 2
  assert 'different config' in capsys.readouterr().err


def test_a_failed_start_does_not_lock_the_workdir(tmp_path, capsys):
  """A start that trained nothing leaves no config behind that refuses the corrected one."""
  wd = tmp_path / 'w'
  tiny = str(ROOT / 'experiments/configs/tiny.py')
  assert cli.main(['train', '--config', tiny, '--workdir', str(wd),
                   '--data', 'mvtec:/does/not/exist']) == 2
  assert not (wd / 'config.json').exists()
  # a config written by an older start that saved no step is replaced, with a message
  wd.mkdir(exist_ok=True)
  (wd / 'config.json').write_text('{"data": {"name": "mvtec"}}')
  assert cli.main(['train', '--config', tiny, '--workdir', str(wd), '--set',
                   'data.resolution=16', 'model.depth=2', f'data.cache_dir={tmp_path / "c"}',
                   'stages=(1,)', 'depth_sampling=max',
                   'stage1.steps=2', 'data.val_fraction=0.5']) == 0
  assert 'starting afresh' in capsys.readouterr().out
  assert '"builtin"' in (wd / 'config.json').read_text()


def test_pip_installed_package_finds_its_configs_from_anywhere(tmp_path, trained_run):
  """`pip install .` ships experiments/: configs and presets by name, from another folder;
  and a trained model loads and runs with the package alone (the schema is in it)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  # built from a copy: a build in the checkout leaves rcae_jax.egg-info there, visible to the
  # suite's other processes while they run
  src = tmp_path / 'src'
  for name in ('rcae_jax', 'experiments'):
    shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns('__pycache__'))
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(ROOT / name, src / name)
  site = tmp_path / 'site'
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target',
                  str(site), str(src)], check=True, capture_output=True)
  code = ('from rcae_jax import config, sweep; '
          'print(config.experiments_dir()); '
          "print(config.load_config('mtd:cpu').data.size[0], "
          "len(sweep.load_preset('components')['variants']))")
  out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, check=True, text=True,
                       capture_output=True, env={**os.environ, 'PYTHONPATH': str(site)}).stdout
  where, numbers = out.strip().splitlines()
  assert where == str(site / 'experiments') and numbers == '64 4'
  dist = list(site.glob('rcae_jax-*.dist-info'))
  assert [d.name for d in dist] == [f'rcae_jax-{rcae_jax.__version__}.dist-info']
  shutil.rmtree(site / 'experiments')
  code = ('import importlib.util, numpy as np; '
          'from rcae_jax import checkpoints, inference; '
          "assert importlib.util.find_spec('experiments') is None; "
          f'config, params = checkpoints.load_bundle({str(trained_run)!r}); '
          'x = np.zeros((2,) + tuple(config.data.size) + (config.data.channels,), np.uint8); '
          "print(config.method, inference.run(config, params, x)['map'].shape)")
  out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, check=True, text=True,
                       capture_output=True, env={**os.environ, 'PYTHONPATH': str(site)}).stdout
  assert out.strip().splitlines()[-1] == 'rcae (2, 16, 16)'
