"""Two processes on localhost (jax.distributed, CPU devices over gloo, 2 per process) train
like one process with 4 devices: the same per-step losses, each process reading only its
slice of every batch from the prepared records, only process 0 writing results, and a
resume after both are killed."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from rcae_jax import data as data_lib
from rcae_jax import files, training

OVERRIDES = ['data.resolution=16', 'data.source=prepared', 'stages=(1,)', 'model.depth=2',
             'depth_sampling=max',  # one program to compile per process
             'stage1.steps=6', 'ckpt_every=2', 'log_every=1', 'batch_size=8']


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(devices, **extra):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT), **extra)
  kept = [f for f in env.get('XLA_FLAGS', '').split()
          if not f.startswith('--xla_force_host_platform_device_count')]
  env['XLA_FLAGS'] = ' '.join(kept + [f'--xla_force_host_platform_device_count={devices}'])
  return env


def _train(workdir, cache, env, extra=()):
  return [sys.executable, '-m', 'rcae_jax', 'train', '--config', 'tiny', '--workdir',
          str(workdir), '--set', f'data.cache_dir={cache}', *OVERRIDES, *extra]


def _start_two(workdir, cache, **env_extra):
  """Starts both processes of one run."""
  port = _free_port()
  return [subprocess.Popen(
      _train(workdir, cache, None, ['--coordinator', f'127.0.0.1:{port}', '--num-processes',
                                    '2', '--process-id', str(i)]),
      env=_env(2, **env_extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for i in range(2)]


def _two_processes(workdir, cache, **env_extra):
  """Both processes of one run; -> their return codes and outputs."""
  return _wait_two(_start_two(workdir, cache, **env_extra))


def _wait_two(procs):
  """-> the return codes and outputs of both started processes."""
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=240)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      tails = [(q.communicate()[0] or '')[-2000:] for q in procs]
      pytest.fail(f'the two-process run did not finish in 240 s; their output: {tails}')
  return [p.returncode for p in procs], outs


def _losses(workdir):
  return [r['loss'] for r in files.read_jsonl(workdir / 'stage1' / 'metrics.jsonl')]


def test_two_processes_train_like_one_with_four_devices(tmp_path):
  cache = tmp_path / 'cache'
  config = tiny_config(cache, *OVERRIDES)
  data_lib.prepare(config)
  assert jax.device_count() == 4 and jax.process_count() == 1
  trace = tmp_path / 'trace'
  trace.mkdir()
  two = tmp_path / 'two'
  # both processes lose their machine after step 5 (step 4 saved), then start again; the
  # reference (this process, 4 devices) trains meanwhile: compiling is one core's work
  killed = _start_two(two, cache, RCAE_KILL_AT='stage1:step5', RCAE_TRACE=str(trace))
  training.train(config, tmp_path / 'one')
  codes, outs = _wait_two(killed)
  assert codes == [-9, -9], outs
  assert len(_losses(two)) == 5 and not (two / 'model').exists()
  codes, outs = _two_processes(two, cache, RCAE_TRACE=str(trace))
  assert codes == [0, 0], [o[-3000:] for o in outs]
  assert '2 process(es)' in outs[0] and '4 device(s)' in outs[0]

  # the same per-step losses as one process with 4 devices (collectives differ: gloo)
  np.testing.assert_allclose(_losses(two), _losses(tmp_path / 'one'), rtol=1e-5)
  # each process read only its half of each global batch of 8, never the other's
  for p in range(2):
    reads = {int(l) for l in (trace / f'process{p}.reads').read_text().split()}
    mine = {s * 8 + p * 4 + j for s in range(6) for j in range(4)}
    theirs = {s * 8 + (1 - p) * 4 + j for s in range(12) for j in range(4)}
    assert mine <= reads and not reads & theirs
  # grain's iterator state was saved per process next to the params
  for p in range(2):
    state = json.loads((two / 'stage1' / 'ckpt' / '6' / 'data' /
                        f'process_{p}-of-2.json').read_text())
    assert state['last_seen_indices'] == {'0': (6 * 4 - 1) * 2 + p}
  # only process 0 wrote result files, and the run's results exist
  assert not (trace / 'process1.writes').exists()
  written = (trace / 'process0.writes').read_text()
  for name in ('config.json', 'env.json', 'calibration.json', 'validation.json'):
    assert name in written
  assert (two / 'model' / 'config.json').exists()
