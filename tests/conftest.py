"""Four virtual CPU devices for every test (set before JAX starts), shared tiny fixtures.

The environment is inherited by the CLI subprocesses some tests start (and by pytest-xdist's
workers). Most of the suite's time is XLA compiling programs that then run for milliseconds,
so the tests compile with XLA's CPU backend optimisations off (LLVM -O0, one codegen
module): measured on the shared tiny run, compilation 146 s -> 75 s, and the suite passes
unchanged. A persistent compilation cache, fresh for each session, lets a program compiled
once (in a fixture, another worker, or a killed subprocess) be loaded instead of compiled
again; every program is cached, since the many small ones add up too.
"""
import os
import tempfile

FAST_COMPILE = ('--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true '
                '--xla_cpu_parallel_codegen_split_count=1')
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           f' {FAST_COMPILE} --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', tempfile.mkdtemp(prefix='rcae_xla_cache_'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import pathlib  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rcae_jax import config as config_lib  # noqa: E402


def tiny_config(tmp_cache, *overrides):
  """The tiny experiment config at 16² and short stages, data cached under tmp_cache."""
  return config_lib.load_config(ROOT / 'experiments' / 'configs' / 'tiny.py', [
      'data.resolution=16', f'data.cache_dir={tmp_cache}', *overrides])


@pytest.fixture(scope='session')
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('cache')


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory, cache_dir):
  """One tiny run of all three stages, shared by the evaluate/predict/dynamics tests."""
  from rcae_jax import training  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('run')
  config = tiny_config(cache_dir, 'model.depth=2', 'stage1.steps=60', 'stage2.steps=30',
                       'stage3.steps=40', 'log.tensorboard=True')
  training.train(config, workdir)
  return workdir
