"""A stage's checkpoints: replicated state saved without a program per device, restored
exactly onto its shardings, checkpoints of the earlier format still read, Orbax's global
defaults left as they were."""
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from conftest import ROOT
from rcae_jax import checkpoints, parallel


def _state(mesh, seed):
  rng = np.random.default_rng(seed)
  # shapes no other test saves (any program a save needs is compiled here), leading axes
  # that 4 replicas could split
  tree = {'params': {'w': rng.normal(size=(12, 5, 3)).astype(np.float32),
                     'b': rng.normal(size=(11,)).astype(np.float32)},
          'opt': {'count': np.int32(3), 'mu': rng.normal(size=(20, 2)).astype(np.float32)},
          'step': np.int32(6)}
  return parallel.replicate(tree, mesh)


def _backend_compiles(fn):
  """-> how many programs XLA compiled while fn ran."""
  seen = []
  listener = lambda event, *_, **__: (
      seen.append(event) if event == '/jax/core/compile/backend_compile_duration' else None)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    fn()
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return len(seen)


def test_state_saved_without_per_device_programs_and_restored_exactly(tmp_path):
  mesh = parallel.make_mesh()
  assert mesh.devices.size == 4
  state = _state(mesh, 0)
  mgr = checkpoints.manager(tmp_path / 'ckpt')

  def save():
    checkpoints.save(mgr, state, 'stage1', data_state=b'position')
    mgr.wait_until_finished()
  # Orbax's CPU default would slice each replicated array once per device (a program each)
  assert _backend_compiles(save) == 0
  like = _state(mesh, 1)
  restored, data_state = checkpoints.restore(checkpoints.manager(tmp_path / 'ckpt'), like)
  assert data_state == b'position'
  chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(state))
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(like)):
    assert got.sharding == want.sharding and got.dtype == want.dtype


def test_checkpoints_of_the_earlier_format_are_resumed(tmp_path):
  """Runs started before the state had its own handler (Orbax's StandardSave) resume."""
  mesh = parallel.make_mesh()
  state = _state(mesh, 2)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as old:
    old.save(4, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave({'stage': 'stage2', 'step': 4, 'data_position': 4})))
    old.wait_until_finished()
  restored, data_state = checkpoints.restore(checkpoints.manager(tmp_path / 'ckpt'),
                                             _state(mesh, 3))
  assert data_state is None
  chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(state))
  assert jnp.asarray(restored['step']).item() == 6


def test_orbax_global_handlers_are_left_alone():
  code = ('import jax, orbax.checkpoint as ocp\n'
          'before = ocp.type_handlers.get_type_handler(jax.Array)\n'
          'import rcae_jax.checkpoints, rcae_jax.training\n'
          'assert ocp.type_handlers.get_type_handler(jax.Array) is before\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
