"""Data parallelism: one replica per device over a 1-D 'data' mesh, gradients pmean-ed.

We use `jax.jit(jax.shard_map(...))` rather than `jax.pmap`: on the installed jax, pmap is in
maintenance mode and is itself implemented with jit + shard_map, and shard_map gives the
same semantics (a per-device program, explicit collectives over the named axis) while
composing with Orbax restores and multi-host global arrays. See docs/parallelism.md.
"""
import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from rcae_jax import config as config_lib

AXIS = 'data'
_DIST_ENV = ('JAX_COORDINATOR_ADDRESS', 'COORDINATOR_ADDRESS')


def maybe_initialize_distributed(force=False, coordinator=None, num_processes=None,
                                 process_id=None):
  """Multi-host: jax.distributed.initialize() when asked for (explicitly, as on localhost:
  coordinator 'host:port', num_processes, process_id) or when the environment sets it up
  (a TPU pod, SLURM, JAX_COORDINATOR_ADDRESS)."""
  if not (force or coordinator or any(os.environ.get(k) for k in _DIST_ENV) or (
      os.environ.get('SLURM_NTASKS', '1') != '1' and 'SLURM_JOB_ID' in os.environ)):
    return
  # CPU devices of several processes talk through gloo (no effect on GPU/TPU backends)
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id)


def make_mesh(devices=None):
  devices = list(jax.devices() if devices is None else devices)
  try:
    axis_types = (jax.sharding.AxisType.Auto,)
    return jax.sharding.Mesh(np.array(devices), (AXIS,), axis_types=axis_types)
  except (AttributeError, TypeError):
    return jax.sharding.Mesh(np.array(devices), (AXIS,))


def local_batch_size(global_batch, mesh):
  """Per-process batch; refuses a global batch the devices cannot split evenly."""
  n_dev = mesh.devices.size
  if global_batch % n_dev or global_batch < n_dev:
    fix = max(n_dev, round(global_batch / n_dev) * n_dev)
    raise config_lib.ConfigError(
        f'batch_size={global_batch} cannot be split over {n_dev} devices: it must be a '
        f'positive multiple of {n_dev} (per-device batch {global_batch / n_dev:g}); use '
        f'--set batch_size={fix}, or fewer devices (CUDA_VISIBLE_DEVICES)')
  return global_batch // jax.process_count()


def process_slice(global_batch):
  """Positions of the global batch this host reads (each host reads only its own slice)."""
  per = global_batch // jax.process_count()
  start = jax.process_index() * per
  return slice(start, start + per)


def replicate(tree, mesh):
  return jax.device_put(tree, NamedSharding(mesh, P()))


def replicated_like(shapes, mesh):
  """jax.eval_shape's output -> the same shapes, dtypes, replicated over `mesh`: what a
  restore needs, without computing the values it would overwrite."""
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                     sharding=NamedSharding(mesh, P())), shapes)


def to_host(tree):
  """Replicated (global) arrays -> numpy, from this process's own copy: with several
  processes a global array spans devices this process cannot read."""
  def get(x):
    if isinstance(x, jax.Array):
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)
  return jax.tree.map(get, tree)


def shard_batch(local_tree, mesh):
  """Host-local numpy slices -> global arrays split along the batch axis over 'data'."""
  sharding = NamedSharding(mesh, P(AXIS))
  return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), local_tree)


def data_parallel(local_fn, mesh, n_replicated, n_sharded=1):
  """shard_map of local_fn(*replicated, *sharded) whose outputs are replicated (pmean-ed)."""
  in_specs = (P(),) * n_replicated + (P(AXIS),) * n_sharded
  return jax.shard_map(local_fn, mesh=mesh, in_specs=in_specs, out_specs=P(), check_vma=False)


def device_summary(mesh):
  d = mesh.devices.flat[0]
  return (f'{mesh.devices.size} device(s) [{d.platform}: {d.device_kind}] over '
          f'{jax.process_count()} process(es)')
