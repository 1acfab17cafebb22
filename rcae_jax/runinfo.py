"""What a run leaves next to its results: the resolved config and the environment."""
import collections
import importlib.metadata
import os
import pathlib
import platform
import subprocess
import sys

import jax

import rcae_jax
from rcae_jax import config as config_lib
from rcae_jax import files
from rcae_jax import host as host_lib

_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'chex', 'numpy',
             'scikit-image', 'pillow', 'ml_collections', 'dm-pix')


def code_version():
  """{'commit', 'dirty', 'version'} of the code running: the git commit of the checkout the
  package lies in and whether it had uncommitted changes (commit None outside a checkout,
  e.g. after `pip install .`), and the package version. Results cite it; a study is
  reproduced by checking out its commit."""
  root = pathlib.Path(__file__).resolve().parent.parent
  def git(*args):
    try:
      out = subprocess.run(['git', '-C', str(root), *args], capture_output=True, text=True,
                           timeout=20, check=True)
      return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
      return None
  commit = git('rev-parse', 'HEAD') if (root / '.git').exists() else None
  dirty = None
  if commit:
    status = git('status', '--porcelain', '--untracked-files=no')
    dirty = None if status is None else bool(status)
  # the imported package's own version, not importlib.metadata's: that answers from whatever
  # rcae_jax.egg-info / dist-info lies on sys.path, which a build in the checkout changes
  return {'commit': commit, 'dirty': dirty, 'version': rcae_jax.__version__}


def describe(code):
  """'commit 1a2b3c4d' (+ ' with uncommitted changes'), or 'no git commit (version X)'."""
  if not code or not code.get('commit'):
    return f'no git commit (rcae_jax {(code or {}).get("version")})'
  return f'commit {code["commit"][:10]}' + (' with uncommitted changes' if code.get('dirty')
                                            else '')


def describe_machine(env):
  """'4 × cpu (CPU: AMD EPYC; avx2, fma)' from an env.json's content; env.json written
  before the CPU was recorded give the devices alone, and no env.json an 'unrecorded machine'."""
  if not env:
    return 'an unrecorded machine'
  kinds = collections.Counter(d.split(':', 2)[-1] for d in env.get('devices', []))
  text = ', '.join(f'{n} × {kind}' for kind, n in kinds.items()) or 'unrecorded devices'
  cpu = env.get('cpu')
  if cpu:
    isa = ', '.join(cpu.get('isa') or [])
    text += f" (CPU: {cpu.get('model') or 'model unknown'}{'; ' + isa if isa else ''})"
  return text


def machine(mesh=None):
  """{'devices', 'cpu'} of this process (the mesh's devices, or all): env.json's part that
  describe_machine reads."""
  devices = list(mesh.devices.flat) if mesh is not None else jax.devices()
  host = host_lib.cpu()
  return {'devices': [f'{d.platform}:{d.id}:{d.device_kind}' for d in devices],
          'cpu': {k: host[k] for k in ('model', 'logical_cpus', 'usable_cpus', 'isa')}}


def environment(mesh=None):
  versions = {}
  for name in _PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  hardware = machine(mesh)
  return {
      'python': sys.version.split()[0], 'platform': platform.platform(),
      'cpu': hardware['cpu'], 'packages': versions, 'backend': jax.default_backend(),
      'devices': hardware['devices'], 'device_count': len(hardware['devices']),
      'process_count': jax.process_count(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'code': code_version(),
  }


def write_run_files(workdir, config, mesh=None):
  if jax.process_index() != 0:
    return
  workdir = pathlib.Path(workdir)
  files.atomic_write(workdir / 'config.json', config_lib.to_json(config))
  files.write_json(workdir / 'env.json', environment(mesh))
