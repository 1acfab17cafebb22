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
# made here in the first process (pytest-xdist's workers inherit it) and removed when that
# process ends; a cache folder the user set (RCAE_XLA_CACHE or JAX's own) is left alone
_OWN_CACHE = not {'JAX_COMPILATION_CACHE_DIR', 'RCAE_XLA_CACHE'} & set(os.environ)
if _OWN_CACHE:
  os.environ['RCAE_XLA_CACHE'] = tempfile.mkdtemp(prefix='rcae_xla_cache_')

import pathlib  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

import filelock  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rcae_jax import compile_cache  # noqa: E402
from rcae_jax import config as config_lib  # noqa: E402

compile_cache.enable()  # the CLI's own setting, inherited by the subprocesses tests start


# The modules of the long subprocess tests: collected first, so that pytest-xdist starts them
# while the short tests fill the other workers (longest first leaves the shortest tail).
LONG_FIRST = ('test_preemption.py', 'test_multihost.py', 'test_robustness.py')


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE and not os.environ.get('PYTEST_XDIST_WORKER'):
    shutil.rmtree(os.environ['RCAE_XLA_CACHE'], ignore_errors=True)


def pytest_collection_modifyitems(items):
  rank = lambda item: (LONG_FIRST.index(item.path.name) if item.path.name in LONG_FIRST
                       else len(LONG_FIRST))
  items.sort(key=rank)  # stable: the order inside each module is kept


def tiny_config(tmp_cache, *overrides):
  """The tiny experiment config at 16² and short stages, data cached under tmp_cache."""
  return config_lib.load_config(ROOT / 'experiments' / 'configs' / 'tiny.py', [
      'data.resolution=16', f'data.cache_dir={tmp_cache}', *overrides])


@pytest.fixture(scope='session')
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('cache')


def shared(tmp_path_factory, name, build):
  """-> a folder that build(folder) filled once this session: under pytest-xdist the first
  worker to ask builds it under a file lock in the workers' common temporary folder, the
  others wait and reuse it. Tests that write into it take `own_copy` (tests write eval/ and
  take a workdir's lock, so two workers must not share one run folder)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):  # not xdist's worker_id fixture: -p no:xdist works
    root = root.parent  # the same for every worker of this session, fresh each session
  folder, done = root / f'shared_{name}', root / f'shared_{name}.done'
  with filelock.FileLock(f'{folder}.lock'):
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)  # a worker that died while building it
      build(folder)
      done.touch()
  return folder


def own_copy(tmp_path_factory, folder):
  path = tmp_path_factory.mktemp(folder.name)
  shutil.copytree(folder, path, dirs_exist_ok=True, symlinks=True)
  return path


def _trained(folder):
  from rcae_jax import training  # pylint: disable=g-import-not-at-top
  config = tiny_config(folder / 'cache', 'model.depth=2', 'stage1.steps=60', 'stage2.steps=30',
                       'stage3.steps=40', 'log.tensorboard=True')
  training.train(config, folder / 'run')


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory):
  """One tiny run of all three stages, shared by the evaluate/predict/dynamics tests:
  trained once per session, each worker testing its own copy."""
  folder = shared(tmp_path_factory, 'trained', _trained)
  return own_copy(tmp_path_factory, folder / 'run')


@pytest.fixture(scope='session')
def evaluated_run(tmp_path_factory):
  """The shared tiny run, evaluated once (eval/scores.csv, eval/metrics.json)."""
  def build(folder):
    import rcae_jax  # pylint: disable=g-import-not-at-top
    trained = shared(tmp_path_factory, 'trained', _trained)
    shutil.copytree(trained / 'run', folder / 'run', symlinks=True)
    rcae_jax.evaluate(folder / 'run')
  folder = shared(tmp_path_factory, 'evaluated', build)
  return own_copy(tmp_path_factory, folder / 'run')
