"""What a run leaves next to its results: the resolved config and the environment."""
import importlib.metadata
import os
import pathlib
import platform
import sys

import jax

from rcae_jax import config as config_lib
from rcae_jax import files

_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'chex', 'numpy',
             'scikit-image', 'pillow', 'ml_collections', 'dm-pix')


def environment(mesh=None):
  versions = {}
  for name in _PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  devices = list(mesh.devices.flat) if mesh is not None else jax.devices()
  return {
      'python': sys.version.split()[0], 'platform': platform.platform(),
      'packages': versions, 'backend': jax.default_backend(),
      'devices': [f'{d.platform}:{d.id}:{d.device_kind}' for d in devices],
      'device_count': len(devices), 'process_count': jax.process_count(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def write_run_files(workdir, config, mesh=None):
  if jax.process_index() != 0:
    return
  workdir = pathlib.Path(workdir)
  files.atomic_write(workdir / 'config.json', config_lib.to_json(config))
  files.write_json(workdir / 'env.json', environment(mesh))
