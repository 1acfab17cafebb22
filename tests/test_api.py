"""The Python API (rcae_jax.load/train/evaluate, Detector) and `export`: the README's snippet
as written, predict equal to evaluate, clear errors, and an artifact that runs without the
package."""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import rcae_jax
from conftest import ROOT
from rcae_jax import __main__ as cli
from rcae_jax import checkpoints, files, inference
from rcae_jax import config as config_lib
from rcae_jax import data as data_lib


def _snippet():
  text = (ROOT / 'README.md').read_text()
  section = text[text.index('## Python API'):]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_readme_snippet_runs_as_written(evaluated_run, tmp_path, monkeypatch):
  config, _ = checkpoints.load_bundle(evaluated_run)
  ds = data_lib.load(config, need_test=True)
  (tmp_path / 'runs').mkdir()
  (tmp_path / 'runs' / 'demo').symlink_to(evaluated_run)
  (tmp_path / 'parts').mkdir()
  for i in (0, -1):  # a normal and a defective test image, at their own (larger) size
    Image.open(ds.test_names[i]).save(tmp_path / 'parts' / f'{i % 7}.png')
  monkeypatch.chdir(tmp_path)
  scope = {}
  exec(compile(_snippet(), 'README.md', 'exec'), scope)  # pylint: disable=exec-used
  pred, seq = scope['pred'], scope['seq']
  size = Image.open(ds.test_names[0]).size[::-1]
  assert len(pred.maps) == 2 and pred.maps[0].shape == size
  assert pred.is_anomalous.dtype == bool and pred.threshold is not None
  n, (h, w) = config.model.depth, config.data.size
  assert seq['recon'].shape == (n, 2, h, w, 3) and seq['enhanced'].shape == (n, 2, h, w, 3)
  assert scope['metrics']['mean']['image_auroc'] >= 0


def test_predict_gives_the_scores_evaluate_wrote(evaluated_run):
  """Detector.predict on the test files = eval/scores.csv (the same files through evaluate)
  and its maps = the maps evaluate measured (inference.run on the loader's arrays)."""
  rows = list(csv.DictReader(open(evaluated_run / 'eval' / 'scores.csv')))
  config, params = checkpoints.load_bundle(evaluated_run)
  ds = data_lib.load(config, need_test=True)
  assert [r['image'] for r in rows] == list(ds.test_names)
  assert [int(r['label']) for r in rows] == list(ds.test_labels)
  detector = rcae_jax.load(evaluated_run)
  pred = detector.predict(list(ds.test_names))
  np.testing.assert_allclose(pred.scores, [float(r['score']) for r in rows], rtol=1e-6)
  cal = json.loads((evaluated_run / 'calibration.json').read_text())
  assert [r['decision'] == 'anomalous' for r in rows] == list(pred.scores > cal['threshold'])
  assert list(pred.is_anomalous) == list(pred.scores > cal['threshold'])
  ref = inference.run(config, params, ds.test)
  full = Image.open(ds.test_names[0]).size[::-1]
  assert all(m.shape == full for m in pred.maps)
  at_model = detector.predict(ds.test)  # the loader's arrays: the networks' own size
  np.testing.assert_allclose(at_model.maps, ref['map'], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(at_model.scores, ref['score'], rtol=1e-5)


def test_predict_takes_arrays_of_any_size_dtype_and_batch(trained_run):
  detector = rcae_jax.load(trained_run)
  rng = np.random.default_rng(0)
  big = rng.integers(0, 256, (3, 40, 24, 3), dtype=np.uint8)
  as_uint8 = detector.predict(big)
  assert as_uint8.maps.shape == (3, 40, 24) and as_uint8.scores.shape == (3,)
  as_float = detector.predict(big / 255.0)
  np.testing.assert_allclose(as_float.scores, as_uint8.scores, rtol=0.05)
  one = detector.predict(big[:1], batch_size=1)
  np.testing.assert_allclose(one.scores, as_uint8.scores[:1], rtol=1e-5)
  mixed = detector.predict([big[0], big[1, :20]])  # a list: one map per image, at its size
  assert [m.shape for m in mixed.maps] == [(40, 24), (20, 24)]
  # a map at the input's size is the model-size map resized
  small = detector.predict(np.stack([np.asarray(Image.fromarray(b).resize((16, 16),
                                                                          Image.BILINEAR))
                                     for b in big]))
  np.testing.assert_allclose(as_uint8.scores, small.scores, rtol=1e-5)


@pytest.mark.parametrize('images,match', [
    (np.zeros((16, 16, 3), np.uint8), r'expected a batch \(B, H, W, C\) .* images\[None\]'),
    (np.zeros((2, 16, 16, 1), np.uint8), r'images\[0\]: 1 channels, the detector takes 3'),
    (np.zeros((2, 16, 16, 3), np.int16), r'images\[0\]: dtype int16; .* uint8 \(0-255\) or float'),
    (np.full((1, 16, 16, 3), 2.0), r'images\[0\]: float values in \[2, 2\]'),
    (np.full((1, 16, 16, 3), np.nan), r'not finite'),
    ([np.zeros((4,), np.uint8)], r'images\[0\]: expected an image \(H, W, 3\) or a path'),
    ([], 'an empty list'),
    (['/no/such/image.png'], '/no/such/image.png'),
])
def test_wrong_inputs_are_one_line_errors(trained_run, images, match):
  detector = rcae_jax.load(trained_run)
  with pytest.raises(data_lib.DataError, match=match) as e:  # InputError is a DataError
    detector.predict(images)
  assert '\n' not in str(e.value)


def test_train_returns_a_detector_and_resumes(trained_run):
  """rcae_jax.train with the run's config object finds every stage finished (nothing
  retrained) and returns the run's Detector."""
  before = (trained_run / 'stage1' / 'metrics.jsonl').read_text()
  config = config_lib.saved(files.read_json(trained_run / 'config.json'))
  detector = rcae_jax.train(config, workdir=trained_run)
  assert isinstance(detector, rcae_jax.Detector)
  assert (trained_run / 'stage1' / 'metrics.jsonl').read_text() == before
  assert detector.threshold == json.loads((trained_run / 'calibration.json').read_text())[
      'threshold']
  with pytest.raises(config_lib.ConfigError, match='workdir= is needed'):
    rcae_jax.train(config)


_OUTSIDE = """
import sys
sys.modules['rcae_jax'] = None  # importing the package now fails: the loader must not need it
sys.path.insert(0, sys.argv[1])
import numpy as np
import rcae_detector
det = rcae_detector.load(sys.argv[1])
z = np.load(sys.argv[2])
out = {}
for key in ('b1', 'b7'):
  got = det.predict(z[key])
  out[key] = float(np.abs(got['maps'] - z[key + '_maps']).max())
  assert (got['is_anomalous'] == (got['scores'] > det.threshold)).all()
out['verify'] = det.verify()
for bad in (z['b1'].astype(np.float32), z['b1'][:, :8]):
  try:
    det.predict(bad)
  except rcae_detector.ExportError as e:
    out.setdefault('errors', []).append(str(e))
print(repr(out))
"""


def test_export_runs_without_the_package(trained_run, tmp_path):
  """The artifact reproduces Detector.predict in a process where rcae_jax cannot be imported
  (batch 1 and 7, 1e-5), its ONNX files in onnxruntime (1e-4); mismatches are one line."""
  onnxruntime = pytest.importorskip('onnxruntime')
  out = tmp_path / 'exported'
  assert cli.main(['export', '--workdir', str(trained_run), '--out', str(out),
                   '--onnx-batch', '1', '7']) == 0
  meta = json.loads((out / 'detector.json').read_text())
  detector = rcae_jax.load(trained_run)
  h, w, c = detector.input_shape
  assert meta['input']['shape'] == [None, h, w, c] and meta['input']['dtype'] == 'uint8'
  assert meta['threshold'] == detector.threshold
  assert meta['versions']['jax'] and meta['params']['count'] > 0
  rng = np.random.default_rng(1)
  batches = {f'b{n}': rng.integers(0, 256, (n, h, w, c), dtype=np.uint8) for n in (1, 7)}
  expected = {f'{k}_maps': detector.predict(v).maps for k, v in batches.items()}
  np.savez(tmp_path / 'want.npz', **batches, **expected)
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  proc = subprocess.run([sys.executable, '-c', _OUTSIDE, str(out), str(tmp_path / 'want.npz')],
                        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  got = eval(proc.stdout.strip().splitlines()[-1])  # pylint: disable=eval-used
  assert got['b1'] <= 1e-5 and got['b7'] <= 1e-5 and got['verify'] <= 1e-5
  assert 'dtype float32, the detector takes uint8' in got['errors'][0]
  assert f'takes (B, {h}, {w}, {c}) uint8; resize each image to {w}x{h}' in got['errors'][1]
  for n in (1, 7):
    rec = meta['onnx'][str(n)]
    assert 'error' not in rec, rec
    session = onnxruntime.InferenceSession(str(out / rec['file']))
    maps, scores = session.run(None, {'images': batches[f'b{n}']})
    np.testing.assert_allclose(maps, expected[f'b{n}_maps'], atol=1e-4)
  # a damaged artifact or a folder that is not an export: one line, nothing overwritten
  params = (out / 'params.npz').read_bytes()
  (out / 'params.npz').write_bytes(params[:-10] + b'0' * 10)
  proc = subprocess.run([sys.executable, str(out / 'rcae_detector.py'), str(out)],
                        capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 2 and 'params.npz: its sha256 differs' in proc.stderr
  other = tmp_path / 'mine'
  other.mkdir()
  (other / 'notes.txt').write_text('mine')
  assert cli.main(['export', '--workdir', str(trained_run), '--out', str(other),
                   '--onnx-batch']) == 2
  assert (other / 'notes.txt').read_text() == 'mine'


def _events(folder):
  """(tag, step, value) of every scalar in a folder's TensorBoard event files, read from
  the TFRecord framing with tensorboardX's protos (no TensorFlow)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out = []
  for f in sorted(folder.glob('events.out.tfevents.*')):
    data, i = f.read_bytes(), 0
    while i < len(data):
      n = int.from_bytes(data[i:i + 8], 'little')
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      i += 12 + n + 4
      out += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
  return out


def test_curves_and_tensorboard_beside_the_log(trained_run):
  """Every stage writes curves.png (loss terms, learning rate) at its end, and with
  log.tensorboard=True (the shared run sets it) event files whose scalars are metrics.jsonl's."""
  config = config_lib.saved(files.read_json(trained_run / 'config.json'))
  for stage in (1, 2, 3):
    folder = trained_run / f'stage{stage}'
    assert Image.open(folder / 'curves.png').size[0] > 300
    log = files.read_jsonl(folder / 'metrics.jsonl')
    assert all(r['lr'] == config[f'stage{stage}'].lr for r in log)
    scalars = {(t, s): v for t, s, v in _events(folder)}
    for r in log:
      assert scalars[(f'stage{stage}/loss', r['step'])] == pytest.approx(np.mean(r['loss']))
      assert scalars[(f'stage{stage}/lr', r['step'])] == pytest.approx(r['lr'])


def test_evaluation_reports_how_test_normals_score_against_training_normals(evaluated_run):
  """eval/metrics.json's test_normal_gap: the normal test images' median and 99th-percentile
  score over validation's training and held-out normals', recomputed from eval/scores.csv
  and validation.json."""
  rows = list(csv.DictReader(open(evaluated_run / 'eval' / 'scores.csv')))
  good = np.array([float(r['score']) for r in rows if r['label'] == '0'])
  gap = json.loads((evaluated_run / 'validation.json').read_text())['normal_gap']
  got = json.loads((evaluated_run / 'eval' / 'metrics.json').read_text())['test_normal_gap']
  assert got['test_normals']['n'] == len(good) > 0
  for ref, key in ((gap['train'], 'ratio_to_train'), (gap['heldout'], 'ratio_to_heldout')):
    np.testing.assert_allclose(got[key]['score_median'], np.median(good) / ref['score_median'],
                               rtol=1e-6)
    np.testing.assert_allclose(got[key]['score_p99'],
                               np.percentile(good, 99) / ref['score_p99'], rtol=1e-6)
  assert 'Normal test images against the training normals' in (
      evaluated_run / 'eval' / 'metrics.md').read_text()
  from rcae_jax.evaluators import test_metrics  # pylint: disable=g-import-not-at-top
  assert test_metrics.test_normal_gap(good, np.ones(len(good)), gap) is None  # no normals


def test_evaluate_on_other_data_leaves_the_run_files(evaluated_run, capsys):
  """`evaluate --data` (the CLI) and evaluate(data=...) score another dataset's test set
  without touching the run's calibration.json and validation.json."""
  before = {f: (evaluated_run / f).read_bytes() for f in ('calibration.json', 'validation.json')}
  assert cli.main(['evaluate', '--workdir', str(evaluated_run), '--data', 'builtin']) == 0
  assert '| category |' in capsys.readouterr().out
  assert rcae_jax.evaluate(evaluated_run, data='builtin')['n_test'] > 0
  assert {f: (evaluated_run / f).read_bytes() for f in before} == before


def test_validate_scores_another_way_without_the_test_set(evaluated_run, monkeypatch, capsys):
  """`evaluate --validation-only --set score.image=topk`: the validation set under the
  override, equal to what training's validation.json recorded for that choice
  (`score_choices`, an independent pass), written to eval_<overrides>/validation.json; the
  test set is never loaded, and the run's own files stay as they were."""
  saved = json.loads((evaluated_run / 'validation.json').read_text())
  before = {f: (evaluated_run / f).read_bytes() for f in ('calibration.json', 'validation.json')}
  loads, load = [], data_lib.load
  monkeypatch.setattr(data_lib, 'load', lambda c, need_test=False, **kw: (
      loads.append(need_test), load(c, need_test=need_test, **kw))[1])
  assert cli.main(['evaluate', '--workdir', str(evaluated_run), '--validation-only', '--set',
                   'score.smoothing=gaussian', 'score.image=topk']) == 0
  assert loads == [False]
  out = capsys.readouterr().out
  written = evaluated_run / 'eval_score.image=topk_score.smoothing=gaussian' / 'validation.json'
  assert f'in {written}' in out and out.startswith('validation: ')
  got = json.loads(written.read_text())
  want = saved['score_choices']['gaussian, top-k mean']
  for key in ('image_auroc', 'aupro', 'pixel_auroc', 'image_f1_max'):
    np.testing.assert_allclose(got['metrics'][key], want[key], rtol=1e-9, err_msg=key)
  assert got['overrides'] == ['score.smoothing=gaussian', 'score.image=topk']
  assert rcae_jax.validate(evaluated_run)['metrics'] == saved['metrics']  # the run's own
  assert {f: (evaluated_run / f).read_bytes() for f in before} == before
  with pytest.raises(config_lib.ConfigError, match='stage3.steps would change what the '):
    rcae_jax.validate(evaluated_run, overrides=['stage3.steps=2'])

