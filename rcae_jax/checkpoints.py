"""Orbax state: each stage's training checkpoints, and the model bundle of a finished run."""
import pathlib

import grain.checkpoint as grain_ckpt
import jax
import numpy as np
import orbax.checkpoint as ocp

from rcae_jax import config as config_lib
from rcae_jax import faults, files, parallel

def _state_handler():
  """Orbax's PyTree handler, its standard types, except that one replica writes each
  replicated array whole. Orbax's default on CPU splits the write over the replicas, slicing
  every array once per device: a program per array shape and device (56 in the tiny
  cross-fitted run), compiled at each process's first save, for a state of megabytes. A
  registry of our own, not Orbax's global one: a program that imports rcae_jax and saves its
  own checkpoints keeps Orbax's defaults."""
  th = ocp.type_handlers
  registry = th.create_type_handler_registry(
      *[(t, th.ScalarHandler()) for t in (int, float, bytes, np.number)],
      (np.ndarray, th.NumpyHandler()), (str, th.StringHandler()),
      (jax.Array, th.ArrayHandler(use_replica_parallel=False)))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def manager(path):
  """Keeps the last two steps. Orbax writes a step into a temporary directory and renames it
  when complete, so a save cut by a kill leaves only that temporary directory, which
  `latest_step` never returns and this manager deletes when it starts."""
  return ocp.CheckpointManager(
      pathlib.Path(path).absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True, save_interval_steps=1,
                                           cleanup_tmp_directories=True),
      item_handlers={'state': _state_handler(), 'meta': ocp.JsonCheckpointHandler(),
                     'data': grain_ckpt.CheckpointHandler()})


class DataState:
  """The grain iterator state (bytes) in the shape grain's Orbax handler saves and restores
  (one file per process)."""

  def __init__(self, state=None):
    self.state = state

  def get_state(self):
    return self.state

  def set_state(self, state):
    self.state = state

  def start_prefetch(self):
    pass


def save(mgr, state, stage, data_state=None):
  """Saves a train state and the data iterator's state after its last batch (asynchronously;
  `mgr.wait_until_finished()` before exiting). stage: its name ('stage2', 'fold0/stage1')."""
  step = int(parallel.to_host(state['step']).reshape(-1)[0])
  items = dict(state=ocp.args.PyTreeSave(state),
               meta=ocp.args.JsonSave({'stage': stage, 'step': step, 'data_position': step}))
  if data_state is not None:
    items['data'] = grain_ckpt.CheckpointSave(DataState(data_state))
  mgr.save(step, args=ocp.args.Composite(**items), force=True)
  faults.point(f'{stage}:saving{step}')


def restore(mgr, like):
  """The latest saved (state, data iterator state or None), with the shapes, dtypes and
  shardings of the state `like`; None before the first save."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  steps = sorted(mgr.all_steps(), reverse=True)
  for i, step in enumerate(steps):
    try:
      items = dict(state=ocp.args.PyTreeRestore(
          abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)),
                   meta=ocp.args.JsonRestore())
      if (pathlib.Path(mgr.directory) / str(step) / 'data').is_dir():
        items['data'] = grain_ckpt.CheckpointRestore(DataState())
      out = mgr.restore(step, args=ocp.args.Composite(**items))
      return out['state'], (out['data'].state if 'data' in items else None)
    except Exception as e:  # pylint: disable=broad-except
      # A step directory that exists but cannot be read (a copy cut short, a damaged disk):
      # never load it; fall back to the step before.
      after = f'resuming from step {steps[i + 1]}' if i + 1 < len(steps) else 'starting afresh'
      bad = pathlib.Path(mgr.directory) / str(step)
      if jax.process_index() == 0:  # kept for a post-mortem, out of the way of the re-save
        bad.rename(bad.with_name(f'{step}.damaged'))
      mgr.reload()
      print(f'warning: checkpoint {bad} is incomplete or damaged ({type(e).__name__}); '
            f'{after} (it was moved to {bad.name}.damaged)', flush=True)
  return None


class BundleError(FileNotFoundError):
  pass


def save_bundle(workdir, params, config):
  """<workdir>/model: params of every trained net (Orbax writes to a temp dir and renames)
  and the config they were trained with (written last: its presence marks a finished run)."""
  path = pathlib.Path(workdir).absolute() / 'model'
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path / 'params', params, force=True)
    ckpt.wait_until_finished()
  faults.point('bundle')
  if jax.process_index() == 0:
    files.atomic_write(path / 'config.json', config_lib.to_json(config))


def load_bundle(workdir):
  """-> (config, params) of a finished run."""
  path = pathlib.Path(workdir).absolute() / 'model'
  if not (path / 'config.json').exists():
    raise BundleError(f'{workdir}: no finished model (expected {path}/); train it first with '
                      f'python -m rcae_jax train --workdir {workdir}')
  config = config_lib.saved(files.read_json(path / 'config.json'))
  try:
    with ocp.StandardCheckpointer() as ckpt:
      params = ckpt.restore(path / 'params')
  except Exception as e:  # pylint: disable=broad-except
    raise BundleError(f'{path / "params"}: the model bundle cannot be read ({type(e).__name__}: '
                      f'{str(e)[:200]}); re-run train with the same --workdir to rewrite it') from e
  return config, params
