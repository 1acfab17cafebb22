"""JAX's persistent compilation cache, on by default for the CLI's commands (not `bench`,
which times compilation).

A `mtd.py:cpu` run compiles for about a minute (stage 1's depths, stages 2-3, validation,
calibration); with the cache a second seed, a resumed run, a sweep's next variant or an
`evaluate` of the same shapes loads those programs instead (measured: docs/benchmarks.md).
Programs are cached per machine kind: the folder's name holds the CPU architecture and a
hash of its instruction-set flags, so a home folder shared by different hosts never hands a
program to a CPU that cannot run it.

  RCAE_XLA_CACHE=off             no cache
  RCAE_XLA_CACHE=/some/folder    cache there
  JAX_COMPILATION_CACHE_DIR=...  JAX's own setting, left alone when set
"""
import hashlib
import os
import platform
import sys

from rcae_jax import host

OFF = ('0', 'off', 'false', 'no', 'none')


def machine_tag():
  """'<arch>-<hash of the CPU's feature flags>' ('<arch>-unknown' where /proc/cpuinfo is
  not readable)."""
  flags = ' '.join(host.cpu()['flags'])
  digest = hashlib.sha256(flags.encode()).hexdigest()[:12] if flags else 'unknown'
  return f'{platform.machine() or "cpu"}-{digest}'


def cache_dir(environ):
  """The folder the cache goes to under `environ`, or None (off, or JAX's own setting)."""
  if 'JAX_COMPILATION_CACHE_DIR' in environ:
    return None
  chosen = environ.get('RCAE_XLA_CACHE', '')
  if chosen.strip().lower() in OFF:
    return None
  if chosen:
    return chosen
  base = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'rcae_jax', 'xla', machine_tag())


def enable(environ=None):
  """Turns the cache on for this process and the processes it starts; returns its folder
  (None: off, or JAX's own setting in effect). Every program is cached (no minimum compile
  time: most of a run's are small)."""
  environ = os.environ if environ is None else environ
  path = cache_dir(environ)
  if path is None:
    return None
  environ['JAX_COMPILATION_CACHE_DIR'] = path
  environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  if 'jax' in sys.modules and environ is os.environ:  # imported already: tell it directly
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_compilation_cache_dir', path)
    jax.config.update('jax_persistent_cache_min_compile_time_secs',
                      float(environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))
  return path
