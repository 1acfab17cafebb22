"""Nothing mixed, nothing overwritten, nothing silently wrong: workdir locks, clean stops on
signals, every image mode decoded right or refused by name, strict configs, small data, and
a fuzz test of the loaders and predict."""
import csv
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, tiny_config
from rcae_jax import __main__ as cli
from rcae_jax import config as config_lib
from rcae_jax import lock
from rcae_jax.data import common

ENV = {**os.environ, 'PYTHONPATH': str(ROOT)}
TINY = ['data.resolution=16', 'model.depth=2', 'stage1.steps=5', 'stage2.steps=3',
        'stage3.steps=3']


# ---- one writer per workdir


def _holder(workdir, seconds=60):
  """A second process that holds the workdir's lock (as a running train would)."""
  code = ('import sys, time; from rcae_jax import lock\n'
          f'with lock.hold({str(workdir)!r}, "train"):\n'
          '  print("held", flush=True); time.sleep(%d)\n' % seconds)
  p = subprocess.Popen([sys.executable, '-c', code], env=ENV, stdout=subprocess.PIPE, text=True)
  assert p.stdout.readline().strip() == 'held'
  return p


def test_a_locked_workdir_refuses_a_second_writer_and_a_dead_holder_never_blocks(tmp_path,
                                                                                 capsys):
  wd = tmp_path / 'run'
  holder = _holder(wd)
  try:
    for argv in (['train', '--config', 'tiny', '--workdir', str(wd)],
                 ['evaluate', '--workdir', str(wd)],
                 ['sweep', 'tiny', '--workdir', str(wd)]):
      assert cli.main(argv) == 2
      err = capsys.readouterr().err.strip().splitlines()
      assert len(err) == 1 and err[0].startswith('error: ') and f'pid {holder.pid}' in err[0], err
    with pytest.raises(lock.LockedError, match='in use by train'):
      with lock.hold(wd, 'evaluate'):
        pass
  finally:
    holder.kill()  # SIGKILL: the OS drops its lock
    holder.wait()
  assert (wd / lock.NAME).exists()  # the dead holder's file is still there ...
  with lock.hold(wd, 'train'):  # ... and does not block
    with lock.hold(wd, 'evaluate'):  # re-entrant in one process
      pass


def test_a_workdir_that_is_a_file_is_one_error_line(tmp_path, capsys):
  f = tmp_path / 'file'
  f.write_text('x')
  assert cli.main(['train', '--config', 'tiny', '--workdir', str(f)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f'error: --workdir {f} is a file, not a folder']


# ---- clean stops on real signals


def _train_cmd(wd, cache, *extra):
  return [sys.executable, '-m', 'rcae_jax', 'train', '--config', 'tiny', '--workdir', str(wd),
          '--set', 'data.resolution=16', 'model.depth=2', 'depth_sampling=max', 'stages=(1,)',
          'stage1.steps=120',
          'ckpt_every=1000', 'log_every=1', f'data.cache_dir={cache}', *extra]


def _signalled(cmd, signals, after_lines=3, timeout=120):
  """Runs cmd, sends `signals` once stage 1 has logged `after_lines` steps; -> (rc, output,
  seconds from the first signal to the exit). Each later signal is sent once the process has
  said it handled the one before: two sent back to back while the main thread is inside XLA
  reach Python's handler as one (CPython keeps one pending flag per signal)."""
  wd = pathlib.Path(cmd[cmd.index('--workdir') + 1])
  log = wd / 'stage1' / 'metrics.jsonl'
  before = len(log.read_text().splitlines()) if log.exists() else 0
  p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
  reader.start()
  t0 = time.time()
  while time.time() - t0 < timeout and p.poll() is None:
    if log.exists() and len(log.read_text().splitlines()) >= before + after_lines:
      break
    time.sleep(0.05)
  assert p.poll() is None, ''.join(lines)
  t_sig = time.time()
  for i, s in enumerate(signals):
    if i:
      handled = f'{signal.Signals(signals[i - 1]).name}: finishing this step'
      while p.poll() is None and not any(handled in l for l in lines):
        time.sleep(0.01)
    p.send_signal(s)
  p.wait(timeout=timeout)
  reader.join(timeout=timeout)
  return p.returncode, ''.join(lines), time.time() - t_sig


def test_sigint_and_sigterm_save_and_stop_and_the_same_command_resumes(tmp_path, cache_dir):
  from rcae_jax import checkpoints  # pylint: disable=g-import-not-at-top
  import chex  # pylint: disable=g-import-not-at-top
  ref = subprocess.Popen(_train_cmd(tmp_path / 'ref', cache_dir), env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  cmd = _train_cmd(tmp_path / 'run', cache_dir)
  rc, out, dt = _signalled(cmd, [signal.SIGINT])
  assert rc == 130 and dt < 30, out
  assert 'Traceback' not in out and 'KeyboardInterrupt' not in out, out
  stopped = [l for l in out.splitlines() if l.startswith('stopped at stage 1 (rcae) step ')]
  assert stopped and stopped[-1].endswith('; the same command resumes'), out
  step = int(stopped[-1].split('step ')[1].split(';')[0])
  assert (tmp_path / 'run' / 'stage1' / 'ckpt' / str(step)).is_dir()  # saved where it stopped
  assert not list((tmp_path / 'run').rglob('*orbax-checkpoint-tmp*'))
  rc, out, _ = _signalled(cmd, [signal.SIGTERM])
  assert rc == 143 and 'stopped at stage 1 (rcae) step ' in out, out
  rc, out, _ = _signalled(cmd, [signal.SIGINT, signal.SIGINT])  # a second one: at once
  assert rc == 130 and 'second SIGINT: stopping now' in out, out
  assert subprocess.run(cmd, env=ENV, capture_output=True).returncode == 0
  assert ref.wait(timeout=300) == 0
  chex.assert_trees_all_equal(checkpoints.load_bundle(tmp_path / 'ref')[1],
                              checkpoints.load_bundle(tmp_path / 'run')[1])
  assert not list((tmp_path / 'run').rglob('*orbax-checkpoint-tmp*'))


# ---- every image mode: decoded right (against an independent decode) or refused by name


def _save(path, im, **kw):
  im.save(path, **kw)
  return str(path)


def _ramp(h=12, w=20):
  y, x = np.mgrid[:h, :w]
  return np.stack([x * 12, y * 20, (x + y) * 7], -1).astype(np.uint8)


def test_every_image_mode_is_decoded_right(tmp_path):
  rgb = _ramp()
  g16 = (np.linspace(10794, 40863, 12 * 20).reshape(12, 20)).astype(np.uint16)
  cases = {}
  cases['16-bit grey'] = (_save(tmp_path / 'g16.png', Image.fromarray(g16)),
                          np.round(g16 / 257.0)[..., None].repeat(3, -1))
  pal = Image.fromarray(rgb).quantize(8)
  lut = np.asarray(pal.getpalette()[:24], np.uint8).reshape(8, 3)
  cases['palette'] = (_save(tmp_path / 'p.png', pal), lut[np.asarray(pal)])
  la = np.stack([rgb[..., 0], np.full_like(rgb[..., 0], 90)], -1)
  cases['LA'] = (_save(tmp_path / 'la.png', Image.fromarray(la, 'LA')),
                 la[..., :1].repeat(3, -1))
  rgba = np.concatenate([rgb, np.full_like(rgb[..., :1], 7)], -1)
  cases['RGBA (alpha dropped)'] = (_save(tmp_path / 'rgba.png', Image.fromarray(rgba)), rgb)
  cmyk = np.stack([rgb[..., 0], rgb[..., 1], rgb[..., 2], np.zeros_like(rgb[..., 0])], -1)
  cases['CMYK (K = 0)'] = (_save(tmp_path / 'cmyk.tif', Image.fromarray(cmyk, 'CMYK')),
                           255 - cmyk[..., :3])
  f32 = np.linspace(0, 1, 12 * 20, dtype=np.float32).reshape(12, 20)
  cases['float TIFF in [0, 1]'] = (_save(tmp_path / 'f.tif', Image.fromarray(f32, 'F')),
                                   np.round(f32 * 255)[..., None].repeat(3, -1))
  cases['8-bit grey'] = (_save(tmp_path / 'g8.png', Image.fromarray(rgb[..., 0])),
                         rgb[..., :1].repeat(3, -1))
  for name, (path, want) in cases.items():
    got = common.read_image(path, None, 3)
    assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 1, name
    assert got.std() > 5, name  # never a silent constant image
    grey = common.read_image(path, 8, 1)
    assert grey.shape == (8, 8, 1) and grey.std() > 3, name
  # EXIF orientation 6: stored landscape, shown rotated 90° clockwise
  exif = Image.Exif()
  exif[0x0112] = 6
  path = _save(tmp_path / 'rot.jpg', Image.fromarray(rgb), exif=exif, quality=100)
  got = common.read_image(path, None, 3)
  assert got.shape == (20, 12, 3)
  assert np.abs(got.astype(int) - np.rot90(rgb, -1)).mean() < 4
  # mixed sizes and modes in one folder decode to one shape
  assert {common.read_image(p, 16, 3).shape for p, _ in cases.values()} == {(16, 16, 3)}


@pytest.mark.parametrize('make, match', [
    (lambda p: Image.fromarray(np.full((4, 4), 2.5, np.float32), 'F').save(p),
     r'32-bit float image with values in \[2.5, 2.5\]; float images must lie in \[0, 1\]'),
    (lambda p: open(p, 'wb').close(), 'unreadable or truncated image'),
    (lambda p: open(p, 'w').write('not an image at all'), 'unreadable or truncated image'),
])
def test_bad_images_are_refused_by_name(tmp_path, make, match):
  path = tmp_path / 'bad.tif'
  make(path)
  with pytest.raises(common.DataError, match=match) as e:
    common.read_image(path, 16, 3)
  assert str(e.value).startswith(str(path))


# ---- strict configs


@pytest.mark.parametrize('text, spec, match', [
    ('from rcae_jax import base_config\ndef get_config():\n  c = base_config.get_config()\n'
     '  c.model.depht = 3\n  return c\n', '{}', r'cfg.py:4: .*depht'),
    ('def get_config(:\n  pass\n', '{}', r'cfg.py:1: SyntaxError'),
    ('def get_config():\n  return 1 / 0\n', '{}', r'cfg.py:2: ZeroDivisionError'),
    ('def get_config():\n  import ml_collections\n  return ml_collections.ConfigDict()\n', '{}',
     r'cfg.py: get_config\(\) returned a config without the schema\'s keys'),
    ('X = 1\n', '{}', r'has no get_config'),
    ('from rcae_jax import base_config\ndef get_config():\n  return base_config.get_config()\n',
     '{}:cpu', r'takes no argument \(got \'cpu\'\)'),
])
def test_config_file_mistakes_are_one_error_line(tmp_path, capsys, text, spec, match):
  path = tmp_path / 'cfg.py'
  path.write_text(text)
  assert cli.main(['train', '--config', spec.format(path), '--workdir', str(tmp_path / 'w')]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: '), err
  assert __import__('re').search(match, err[0]), err[0]


def test_unknown_config_arguments_are_refused_by_name(capsys, tmp_path):
  for spec, match in (('mtd:cpuu', "unknown argument 'cpuu'; known: ('', 'cpu')"),
                      ('tiny:cpu', "takes no argument (got 'cpu')"),
                      ('fae:nosuch', "no shipped config named 'nosuch'")):
    assert cli.main(['train', '--config', spec, '--workdir', str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


# ---- small data


def _folder_dataset(root, n_train):
  rng = np.random.default_rng(0)
  (root / 'train').mkdir(parents=True)
  for i in range(n_train):
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(root / 'train' / f'{i}.png')
  (root / 'test' / 'good').mkdir(parents=True)
  Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(root / 'test/good/0.png')
  return root


def test_one_training_image_says_what_is_missing(tmp_path, capsys):
  root = _folder_dataset(tmp_path / 'one', 1)
  wd = tmp_path / 'run'
  argv = ['train', '--config', 'tiny', '--workdir', str(wd), '--data', f'folder:{root}',
          '--set', *TINY, 'stages=(1,)', f'data.cache_dir={tmp_path / "cache"}']
  assert cli.main(argv) == 0
  out = capsys.readouterr()
  assert 'warning: no held-out normal images' in out.out + out.err
  why = json.loads((wd / 'calibration.json').read_text())['why']
  assert 'only 1 normal training image' in why and 'data.val_fraction=0.1' in why, why
  assert cli.main(['predict', '--workdir', str(wd), str(root / 'test'),
                   '--out', str(tmp_path / 'p')]) == 0
  out = capsys.readouterr().out
  assert 'no decisions: the run has no threshold (only 1 normal training image' in out, out
  assert '0 anomalous' not in out


# ---- predict never loses a result; fuzz


def test_predict_mirrors_input_paths_and_lists_skipped_files(trained_run, tmp_path, capsys):
  src = tmp_path / 'in'
  for sub in ('good', 'scratch', 'scratch/deeper'):
    (src / sub).mkdir(parents=True)
  img = _ramp(24, 40)
  for name in ('good/000.png', 'scratch/000.png', 'scratch/deeper/000.png', 'a.jpg', 'a.png'):
    Image.fromarray(img).save(src / name)
  (src / 'notes.txt').write_text('hello')
  out = tmp_path / 'out'
  assert cli.main(['predict', '--workdir', str(trained_run), str(src), '--out', str(out)]) == 0
  rows = list(csv.DictReader(open(out / 'scores.csv')))
  assert len(rows) == 5 and len({r['map'] for r in rows}) == 5
  for r in rows:
    m = Image.open(out / r['map'])
    assert m.size[1] >= 24 and m.size[0] > 40  # the input's size, plus the colour scale
  skipped = list(csv.DictReader(open(out / 'skipped.csv')))
  assert [s['file'] for s in skipped] == [str(src / 'notes.txt')]
  assert 'not an image file' in skipped[0]['reason']
  assert 'skipped' in capsys.readouterr().out


def _bad_files(folder):
  """Generated bad inputs: each ends in a named error or a correct decode."""
  folder.mkdir()
  good = Image.fromarray(_ramp())
  buf = io.BytesIO()
  good.save(buf, 'PNG')
  (folder / 'truncated.png').write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
  (folder / 'zero.png').write_bytes(b'')
  (folder / 'text.jpg').write_text('definitely not a jpeg')
  good.save(folder / 'png_named.jpg', 'PNG')  # wrong extension, readable: decoded
  Image.new('1', (20000, 20000)).save(folder / 'huge.png')  # a decompression bomb
  Image.fromarray(np.full((4, 4), 7.0, np.float32), 'F').save(folder / 'float_out.tif')
  Image.fromarray(np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000).save(folder / 'g16.png')
  Image.fromarray(_ramp()).convert('P').save(folder / 'palette.png')
  good.save(folder / 'ok.png')
  return {'truncated.png', 'zero.png', 'text.jpg', 'huge.png', 'float_out.tif'}


def test_fuzz_loaders_and_predict_end_in_named_errors_or_right_decodes(trained_run, tmp_path,
                                                                       capsys):
  folder = tmp_path / 'bad'
  bad = _bad_files(folder)
  for f in sorted(folder.iterdir()):
    try:
      arr = common.read_image(f, 16, 3)
    except common.DataError as e:
      assert f.name in bad and str(e).startswith(str(f)), (f, e)
      continue
    assert f.name not in bad and arr.shape == (16, 16, 3) and arr.std() > 1, f
  out = tmp_path / 'out'
  assert cli.main(['predict', '--workdir', str(trained_run), str(folder), '--out', str(out)]) == 0
  printed = capsys.readouterr()
  assert 'Traceback' not in printed.out + printed.err
  skipped = {pathlib.Path(s['file']).name for s in csv.DictReader(open(out / 'skipped.csv'))}
  assert skipped == bad
  scored = {pathlib.Path(r['image']).name for r in csv.DictReader(open(out / 'scores.csv'))}
  assert scored == {p.name for p in folder.iterdir()} - bad
