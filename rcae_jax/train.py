"""The three training stages: pure, jitted, data-parallel steps and one loop that runs them.

Stage 1 trains the RcAE on normal images at a random depth n per batch; stage 2 trains the
DPN with the RcAE frozen; stage 3 trains the CRD on pseudo-anomalies with both frozen.
A step is `step(state, frozen, batch) -> (state, metrics)`; its RNG is
fold_in(state['rng'], state['step']), so the state alone says where a run is.
"""
import functools
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm

from rcae_jax import anomalies, calibration, files, losses, parallel, pipeline, runinfo
from rcae_jax import config as config_lib
from rcae_jax import data as data_lib
from rcae_jax.data import pipeline as input_pipeline

NET_OF_STAGE = {1: 'rcae', 2: 'dpn', 3: 'crd'}


def stage_loss(stage, nets, config):
  """loss(params, frozen, batch, rng, n) -> (loss, metrics) for one device's examples.

  n is the static recursion depth trained this step (stage 1; ignored by stages 2, 3).
  """
  gw = config.grad_weight

  def restoration_loss(stage_config, target, pred, mask):
    if stage_config.get('region_weight', 0.0):
      return losses.region_balanced_l1(target, pred, mask, stage_config.region_weight, gw)
    return losses.l1_with_gradient(target, pred, gw)

  def stage1(params, frozen, batch, rng, n):
    x, target, mask = anomalies.restoration_pair(
        jax.random.fold_in(rng, 2), batch['image'], batch['index'], frozen.get('textures'),
        config, config.stage1)
    recon = pipeline.rcae_at_depth(nets, params, x, n)
    return restoration_loss(config.stage1, target, recon, mask), {}

  def stage2(params, frozen, batch, rng, n):
    del n
    x, target, mask = anomalies.restoration_pair(
        jax.random.fold_in(rng, 2), batch['image'], batch['index'], frozen.get('textures'),
        config, config.stage2)
    seq = jax.lax.stop_gradient(pipeline.rcae_sequence(nets, frozen['rcae'], x))
    enh = pipeline.enhance(nets, params, seq, x)
    tile = lambda a: jnp.broadcast_to(a, (enh.shape[0],) + a.shape).reshape(
        (-1,) + a.shape[1:])
    return restoration_loss(config.stage2, tile(target), enh.reshape((-1,) + x.shape[1:]),
                            tile(mask)), {}

  def stage3(params, frozen, batch, rng, n):
    del n
    corrupted, mask = anomalies.synthesize_batch(
        jax.random.fold_in(rng, 1), batch['image'], batch['index'], frozen['textures'], config)
    seq = pipeline.rcae_sequence(nets, frozen['rcae'], corrupted)
    enh = jax.lax.stop_gradient(pipeline.enhance(nets, frozen['dpn'], seq, corrupted))
    pred = pipeline.crd_map(nets, params, enh, corrupted)
    if config.model.crd_loss == 'l2':
      return losses.l2_with_gradient(mask, pred, gw), {}
    return losses.bce_with_gradient(mask, pred, config.model.crd_grad_weight), {}

  return {1: stage1, 2: stage2, 3: stage3}[stage]


def optimizer(lr):
  return optax.inject_hyperparams(optax.adam)(learning_rate=lr)


def init_state(params, tx, rng):
  return {'params': params, 'opt_state': tx.init(params), 'step': jnp.int32(0), 'rng': rng}


def depth_of_step(config, stage, step):
  """The recursion depth n of a step: U{1..N} (or N), a function of (seed, step) alone, so
  every device and host draws the same n and a resumed run draws the same sequence."""
  if stage != 1:
    return 0
  if config.depth_sampling == 'max':
    return config.model.depth
  return int(np.random.default_rng((config.data.seed, 1, step)).integers(1, config.model.depth + 1))


def make_train_step(stage, nets, config, mesh):
  """-> (step, tx): step(state, frozen, batch, step_index) -> (state, metrics).

  The update is pure, data-parallel and jitted with the state donated. Stage 1 compiles
  once per depth n (at most N programs, chosen on the host): a traced `lax.switch` over
  depths runs ~6x slower on CPU, as every branch's residuals are kept for the backward pass.
  Several seeds are several runs (`sweep --seeds`), not a vmapped axis here.
  """
  loss_fn = stage_loss(stage, nets, config)
  tx = optimizer(config[f'stage{stage}'].lr)

  def update(state, frozen, batch, n):
    rng = jax.random.fold_in(state['rng'], state['step'])
    x = batch['image'].astype(jnp.float32) / 255.0
    b = {'image': x, 'index': batch['index']}
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'], frozen, b, rng, n)
    grads = jax.lax.pmean(grads, parallel.AXIS)
    metrics = jax.lax.pmean(dict(metrics, loss=loss), parallel.AXIS)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    new = {'params': optax.apply_updates(state['params'], updates), 'opt_state': opt_state,
           'step': state['step'] + 1, 'rng': state['rng']}
    return new, metrics

  def compiled(n):
    local = functools.partial(update, n=n)
    return jax.jit(parallel.data_parallel(local, mesh, n_replicated=2, n_sharded=1),
                   donate_argnums=(0,))

  programs = {}

  def step(state, frozen, batch, step_index):
    n = depth_of_step(config, stage, step_index)
    if n not in programs:
      programs[n] = compiled(n)
    return programs[n](state, frozen, batch)

  step.program = compiled  # the jitted program of one depth n (bench lowers it directly)
  return step, tx


def num_steps(config, stage, n_train):
  st = config[f'stage{stage}']
  return st.steps or max(1, math.ceil(st.epochs * n_train / config.batch_size))


def _checkpoint_manager(path, config):
  return ocp.CheckpointManager(
      pathlib.Path(path).absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                           save_interval_steps=1))


def _save(mgr, state, stage):
  step = int(state['step'].reshape(-1)[0]) if state['step'].ndim else int(state['step'])
  mgr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      meta=ocp.args.JsonSave({'stage': stage, 'step': step, 'data_position': step})), force=True)


def _restore(mgr, abstract_state):
  step = mgr.latest_step()
  if step is None:
    return None
  out = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  return out['state']


def init_model_params(nets, config, stage):
  """Initial params of the stage's network, from (seed, stage)."""
  res, ch = config.data.resolution, config.data.channels
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), stage)
  return pipeline.init_params(nets, key, (res, res, ch))[NET_OF_STAGE[stage]]


def train_stage(stage, config, workdir, train_images, frozen, mesh, max_steps=None):
  """Trains one stage (resuming from its checkpoint); returns the trained params.

  max_steps stops early (as a kill would) without marking the stage finished; tests use it.
  """
  nets = pipeline.networks(config)
  stage_dir = pathlib.Path(workdir) / f'stage{stage}'
  total = num_steps(config, stage, len(train_images))
  step_fn, tx = make_train_step(stage, nets, config, mesh)
  state = init_state(init_model_params(nets, config, stage), tx,
                     jax.random.PRNGKey(config.seed + 1000 * stage))
  mgr = _checkpoint_manager(stage_dir / 'ckpt', config)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, parallel.replicate(state, mesh))
  restored = _restore(mgr, abstract)
  state = parallel.replicate(restored if restored is not None else state, mesh)
  start = int(np.asarray(state['step']).reshape(-1)[0])
  log_path = stage_dir / 'metrics.jsonl'
  is_main = jax.process_index() == 0
  if is_main:
    stage_dir.mkdir(parents=True, exist_ok=True)
    files.truncate_jsonl(log_path, start)
  end = total if max_steps is None else min(total, max_steps)
  frozen = parallel.replicate(frozen, mesh)
  bar = tqdm.tqdm(total=total, initial=start, desc=f'stage {stage} ({NET_OF_STAGE[stage]})',
                  disable=not is_main, mininterval=1.0, dynamic_ncols=True)
  batches = input_pipeline.prefetch_to_device(train_images, config.batch_size, config.data.seed,
                                              start, end, mesh)
  t0, n_img = time.perf_counter(), 0
  for step, batch in zip(range(start, end), batches):
    state, metrics = step_fn(state, frozen, batch, step)
    n_img += config.batch_size
    done = step + 1
    if done % config.log_every == 0 or done == end:
      m = jax.tree.map(lambda v: np.asarray(v).tolist(), metrics)  # the only host sync
      dt = time.perf_counter() - t0
      rec = {'step': done, **m, 'images_per_s': n_img / dt}
      if is_main:
        files.append_jsonl(log_path, rec)
      loss = np.mean(m['loss'])
      bar.set_postfix(loss=f'{loss:.4f}', img_s=f'{n_img / dt:.1f}')
      t0, n_img = time.perf_counter(), 0
    if done % config.ckpt_every == 0 or done == end:
      _save(mgr, state, stage)
    bar.update(1)
  bar.close()
  mgr.wait_until_finished()
  mgr.close()
  return state['params'], end == total


def needs_textures(stage, config):
  """Stage 3 always draws pseudo-anomalies; stages 1 and 2 when they restore."""
  return stage == 3 or config[f'stage{stage}'].get('restore', False)


def frozen_inputs(stage, params, config):
  """What a stage's step reads but does not train (plus the pseudo-anomaly texture bank)."""
  frozen = {}
  if stage >= 2:
    frozen['rcae'] = params['rcae']
  if stage == 3:
    frozen['dpn'] = params['dpn']
  if needs_textures(stage, config):
    frozen['textures'] = jnp.asarray(anomalies.texture_bank(
        config.data.resolution, config.data.channels, seed=config.seed))
  return frozen


def train(config, workdir, mesh=None, dataset=None, max_steps=None):
  """Runs the configured stages in order (each resuming), then writes the model bundle."""
  workdir = pathlib.Path(workdir)
  mesh = mesh or parallel.make_mesh()
  parallel.local_batch_size(config.batch_size, mesh)
  _refuse_other_config(workdir, config)
  dataset = dataset or data_lib.load(config)
  runinfo.write_run_files(workdir, config, mesh)  # after the data loaded: a failed start
  # leaves no config.json behind to refuse the corrected command
  if jax.process_index() == 0:
    print(f'training {config.data.name}/{dataset.category}: {len(dataset.train)} train, '
          f'{len(dataset.val)} held-out normal images at {config.data.resolution}²; '
          f'{parallel.device_summary(mesh)}, global batch {config.batch_size}', flush=True)
  params = {}
  for stage in config.stages:
    frozen = frozen_inputs(stage, params, config)
    params[NET_OF_STAGE[stage]], finished = train_stage(
        stage, config, workdir, dataset.train, frozen, mesh, max_steps)
    if not finished:
      return None  # stopped early, as an interrupted run would be
  params = jax.device_get(params)
  runinfo.save_bundle(workdir, params, config)
  calibration.calibrate(workdir, config, params, dataset.val)
  val = calibration.validate(workdir, config, params, dataset.val)
  if val and jax.process_index() == 0:
    print('validation (held-out normals + pseudo-anomalies): ' + ', '.join(
        f'{k} {v:.1f}' for k, v in val['metrics'].items()), flush=True)
  return params


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
  return out


def flat_config(config):
  """{'model.depth': 5, ...} as the run's config.json stores it (lists for tuples)."""
  return _flatten(json.loads(config_lib.to_json(config)))


def _trained_anything(workdir):
  """Whether any stage of the run in workdir saved a checkpoint step."""
  return any(p.is_dir() and p.name.isdigit()
             for p in pathlib.Path(workdir).glob('stage*/ckpt/*'))


def _refuse_other_config(workdir, config):
  """Resuming a workdir trained with another config would mix two experiments: refuse."""
  path = pathlib.Path(workdir) / 'config.json'
  if not path.exists():
    return
  old = _flatten(json.loads(path.read_text()))
  new = flat_config(config)
  diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
  if diff and not _trained_anything(workdir):
    print(f'{workdir}: no training step was saved under the old config; starting afresh with '
          f'the new one (changed: {", ".join(diff[:6])})', flush=True)
    return
  if diff:
    raise config_lib.ConfigError(
        f'{workdir} holds a run with a different config ({", ".join(diff[:6])}'
        f'{" ..." if len(diff) > 6 else ""}); use a new --workdir or the same config')
