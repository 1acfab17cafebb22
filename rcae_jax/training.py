"""The training stages of a run's method: a jitted, data-parallel step per stage and one loop
that runs them in order, resuming each from its checkpoint.

What each stage trains, reads frozen and minimises is its method's declaration
(`rcae_jax/methods/`: RcAE's three stages, FAE's one). A step is `step(state, frozen, batch,
step_index) -> (state, metrics)`; its RNG is fold_in(state['rng'], state['step']), so the
state alone says where a run is, and the batch of a step is a function of (seed, step) alone
(`data.batches`).
"""
import contextlib
import functools
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from rcae_jax import anomalies, augment, checkpoints, crossfit, evaluators, faults, figures
from rcae_jax import files
from rcae_jax import lock, methods, parallel, runinfo, sizes, stops, xla_options
from rcae_jax import config as config_lib
from rcae_jax import data as data_lib
from rcae_jax import model as model_lib
from rcae_jax.data import batches as batches_lib
from rcae_jax.evaluators import threshold


def learning_rate(stage_config, total_steps=None):
  """stageK.lr held (schedule 'constant', the paper's) or cosine-decayed to 0 over the
  stage's total_steps ('cosine'): a float or an optax schedule of the step index."""
  lr = stage_config.lr
  if stage_config.get('schedule', 'constant') == 'cosine':
    if not total_steps:
      raise ValueError('a cosine schedule needs the stage\'s total steps')
    lr = optax.cosine_decay_schedule(lr, total_steps)
  return lr


def optimizer(stage_config, total_steps=None):
  """Adam at `learning_rate`, or AdamW with stageK.weight_decay > 0. The step count lives
  in the optimizer state, so a resumed stage continues the same schedule."""
  lr = learning_rate(stage_config, total_steps)
  decay = stage_config.get('weight_decay', 0.0)
  if decay:
    return optax.inject_hyperparams(optax.adamw)(learning_rate=lr, weight_decay=decay)
  return optax.inject_hyperparams(optax.adam)(learning_rate=lr)


def variant_of_step(config, stage, step):
  """The static choice of a step of stage `stage` (RcAE's stage 1: its recursion depth),
  a function of (seed, step) alone; None for stages without one."""
  return methods.stage(config, stage).variant(config, step)


class TrainStep:
  """One stage's update, pure and data-parallel: grads pmean-ed over the mesh's 'data' axis,
  the state donated. A stage with a per-step variant compiles one program per value (RcAE's
  stage 1: per depth n, at most N, chosen on the host): a traced `lax.switch` over depths
  ran ~6x slower on CPU, as every branch's residuals are kept for the backward pass. Programs are cached on the object, and objects
  per (stage, config, mesh) by `train_step`, so a resumed or repeated stage compiles nothing.
  """

  def __init__(self, stage, config, mesh, total_steps=None):
    self.stage, self.config, self.mesh = stage, config, mesh
    self.spec = methods.stage(config, stage)
    self.model = model_lib.from_config(config)
    self.net = self.spec.net
    self.group = config[self.spec.group]
    self.tx = optimizer(self.group, total_steps)
    self.lr = learning_rate(self.group, total_steps)
    self._programs = {}

  def init_state(self):
    """The stage's fresh state: its network's initial params (from (seed, stage)), Adam's
    state, step 0 and the stage's RNG key."""
    c = self.config
    params = model_lib.init_for_stage(c, self.stage)
    # jitted: one program for the optimizer state instead of one small one per leaf shape
    return {'params': params, 'opt_state': jax.jit(self.tx.init)(params), 'step': jnp.int32(0),
            'rng': jax.random.PRNGKey(c.seed + 1000 * self.stage)}

  def _update(self, state, frozen, batch, objective):
    rng = jax.random.fold_in(state['rng'], state['step'])
    image = augment.crops(jax.random.fold_in(rng, 5), batch['image'], batch['index'],
                          sizes.train_size(self.config, self.spec.group),
                          self.group.get('crop_sampling', 'uniform'))
    image = augment.flips(jax.random.fold_in(rng, 3), image, batch['index'], self.group.flip)
    image = augment.gains(jax.random.fold_in(rng, 4), image.astype(jnp.float32) / 255.0,
                          batch['index'], self.group.jitter)
    b = {'image': image, 'index': batch['index']}
    extra = {}
    if 'fold' in batch:  # a cross-fitted learner's batch: one fold's networks read it
      fold = batch['fold'][0]
      frozen = {**frozen, **{net: crossfit.select(frozen[net], fold) for net in self.spec.reads}}
      extra['fold'] = fold.astype(jnp.float32)  # logged: which fold's networks this step read
    (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(
        state['params'], frozen, b, rng)
    grads = jax.lax.pmean(grads, parallel.AXIS)
    metrics = jax.lax.pmean(dict(metrics, loss=loss, **extra), parallel.AXIS)
    updates, opt_state = self.tx.update(grads, state['opt_state'], state['params'])
    return {'params': optax.apply_updates(state['params'], updates), 'opt_state': opt_state,
            'step': state['step'] + 1, 'rng': state['rng']}, metrics

  def program(self, variant=None):
    """The jitted program of one variant (RcAE's stage 1: a depth n) or of the stage:
    (state, frozen, batch)."""
    if variant not in self._programs:
      objective = self.spec.objective(self.model, self.config, variant, parallel.AXIS)
      local = functools.partial(self._update, objective=objective)
      self._programs[variant] = jax.jit(
          parallel.data_parallel(local, self.mesh, n_replicated=2, n_sharded=1),
          donate_argnums=(0,),
          compiler_options=xla_options.training(self.mesh.devices.flat[0].platform))
    return self._programs[variant]

  @property
  def programs(self):
    return dict(self._programs)

  def lr_at(self, step_index):
    """The learning rate the update of step `step_index` (0-based) used."""
    return float(self.lr(step_index) if callable(self.lr) else self.lr)

  def __call__(self, state, frozen, batch, step_index):
    return self.program(variant_of_step(self.config, self.stage, step_index))(state, frozen,
                                                                           batch)


@functools.lru_cache(maxsize=16)
def _train_step(stage, config_json, mesh, total_steps):
  return TrainStep(stage, config_lib.from_json(config_json), mesh, total_steps)


def train_step(stage, config, mesh, total_steps=None):
  """The stage's TrainStep (cached per stage, config less its host-only keys
  (`config.program_json`) and mesh, and per length when a cosine schedule depends on it)."""
  if config[methods.stage(config, stage).group].get('schedule', 'constant') == 'constant':
    total_steps = None
  return _train_step(stage, config_lib.program_json(config), mesh, total_steps)


def num_steps(config, stage, n_train):
  st = config[methods.stage(config, stage).group]
  return st.steps or max(1, math.ceil(st.epochs * n_train / config.batch_size))


def train_stage(stage, config, workdir, train_images, frozen, mesh, max_steps=None,
                name=None, folds=None):
  """Trains one stage (resuming from its checkpoint) -> (params, finished).

  max_steps stops early (as a kill would) without marking the stage finished; tests use it.
  name: its folder under workdir and its name in logs and fault points ('stage<k>'; a
  cross-fitting fold's 'fold<f>/stage<k>'). folds: the learner's fold members
  (`data.batches.FoldStream`).
  """
  name = name or f'stage{stage}'
  stage_dir = pathlib.Path(workdir) / name
  total = num_steps(config, stage, len(train_images))
  step_fn = train_step(stage, config, mesh, total)
  mgr = checkpoints.manager(stage_dir / 'ckpt')
  # restored into the state's shapes alone: a fresh process resuming past finished stages
  # computed each one's initial params only to overwrite them (0.2-1 s per stage, measured)
  restored = checkpoints.restore(
      mgr, like=parallel.replicated_like(jax.eval_shape(step_fn.init_state), mesh))
  if restored is None:
    state, data_state = parallel.replicate(step_fn.init_state(), mesh), None
  else:
    state, data_state = restored
  start = int(parallel.to_host(state['step']).reshape(-1)[0])
  log_path = stage_dir / 'metrics.jsonl'
  is_main = jax.process_index() == 0
  if is_main:
    stage_dir.mkdir(parents=True, exist_ok=True)
    files.truncate_jsonl(log_path, start)
  end = total if max_steps is None else min(total, max_steps)
  frozen = parallel.replicate(frozen, mesh)
  label = f'{name.replace("stage", "stage ")} ({step_fn.net})'
  bar = tqdm.tqdm(total=total, initial=start, desc=label,
                  disable=not is_main, mininterval=1.0, dynamic_ncols=True)
  batches = batches_lib.prefetch_to_device(train_images, config.batch_size, config.data.seed,
                                           start, end, mesh, state=data_state,
                                           read_threads=config.data.read_threads,
                                           folds=folds)
  t0, n_img = time.perf_counter(), 0
  done, saved, stop = start, start, None
  board = _board(config, stage_dir) if is_main else None
  with stops.on_signal() as request, board or contextlib.nullcontext():
    for step, (batch, data_state) in zip(range(start, end), batches):
      state, metrics = step_fn(state, frozen, batch, step)
      n_img += config.batch_size
      done = step + 1
      if done % config.log_every == 0 or done == end:
        m = jax.tree.map(lambda v: v.tolist(), parallel.to_host(metrics))  # the only host sync
        dt = time.perf_counter() - t0
        rec = {'step': done, **m, 'lr': step_fn.lr_at(done - 1), 'images_per_s': n_img / dt}
        if is_main:
          files.append_jsonl(log_path, rec)
        if board:
          for key, value in rec.items():
            if key != 'step':
              board.add_scalar(f'{name}/{key}', float(np.mean(value)), done)
        loss = np.mean(m['loss'])
        bar.set_postfix(loss=f'{loss:.4f}', img_s=f'{n_img / dt:.1f}')
        t0, n_img = time.perf_counter(), 0
      faults.point(f'{name}:step{done}')
      stop = request.requested() and request.signum
      if done % config.ckpt_every == 0 or done == end or stop:
        checkpoints.save(mgr, state, name, data_state)
        saved = done
      bar.update(1)
      if stop:
        break
    # inside the handler: a second signal while the last checkpoint is still being written
    # stops at once, as it does during a step
    mgr.wait_until_finished()
  bar.close()
  mgr.close()
  curves = stage_dir / 'curves.png'
  if is_main and done == total and (done > start or not curves.exists()):
    # a stage finished earlier (a resumed run passing through it) keeps its figure: redrawing
    # it cost a quarter second per stage at every restart
    figures.training_curves(curves, files.read_jsonl(log_path), label)
  if stop:
    raise stops.Stopped(f'stopped at {label} step {saved}; the same command resumes', stop)
  return state['params'], end == total


def _board(config, stage_dir):
  """A TensorBoard writer into the stage's folder when log.tensorboard (tensorboardX: no
  TensorFlow), else None."""
  if not config.log.tensorboard:
    return None
  import tensorboardX  # pylint: disable=g-import-not-at-top
  return tensorboardX.SummaryWriter(str(stage_dir), flush_secs=30)


def _crops(config):
  """', stage 1 on 64² crops, ...' for the stages that train on crops."""
  crops = [f'stage {k} on {sizes.label(sizes.train_size(config, methods.stage(config, k).group))}'
           for k in config.stages if config[methods.stage(config, k).group].get('crop')]
  return f' ({", ".join(crops)} crops)' if crops else ''


def frozen_inputs(stage, params, config):
  """What a stage's step reads but does not train: the networks it declares it reads, and
  the pseudo-anomaly texture bank when it draws pseudo-anomalies."""
  spec = methods.stage(config, stage)
  frozen = {net: params[net] for net in spec.reads}
  group = spec.anomalies(config)
  if group is not None:
    frozen['textures'] = jnp.asarray(anomalies.texture_bank(  # at the examples' size
        sizes.train_size(config, spec.group), config.data.channels, seed=config.seed,
        procedural=config[group].get('procedural', 0)))
  return frozen


def _train_folds(plan, config, workdir, train_images, fold_of, mesh, max_steps):
  """Cross-fitting: every first-level stage once per fold f on the images outside f ->
  {net: params stacked over the folds}, or None when stopped early."""
  per_fold = []
  for f in range(plan.folds):
    images = crossfit.Subset(train_images, np.flatnonzero(fold_of != f), f'not fold {f}')
    params = {}
    for stage in plan.first_level:
      name = f'fold{f}/stage{stage}'
      params[methods.stage(config, stage).net], finished = train_stage(
          stage, config, workdir, images, frozen_inputs(stage, params, config), mesh,
          max_steps, name=name)
      if not finished:
        return None
      faults.point(f'after-{name}')
    per_fold.append(params)
  return crossfit.stack(per_fold)


def train(config, workdir, mesh=None, dataset=None, max_steps=None):
  """Runs the configured stages in order (each resuming), then writes the model bundle."""
  with lock.hold(workdir, 'train'):
    return _train(config, pathlib.Path(workdir), mesh, dataset, max_steps)


def _train(config, workdir, mesh, dataset, max_steps):
  mesh = mesh or parallel.make_mesh()
  parallel.local_batch_size(config.batch_size, mesh)
  config_lib.check_workdir(workdir, config)
  dataset = dataset or data_lib.load(config)
  runinfo.write_run_files(workdir, config, mesh)  # after the data loaded: a failed start
  # leaves no config.json behind to refuse the corrected command
  if jax.process_index() == 0:
    print(f'training {config.data.name}/{dataset.category}: {len(dataset.train)} train, '
          f'{len(dataset.val)} held-out normal images at {sizes.label(sizes.image_size(config))}'
          f'{_crops(config)}; '
          f'{parallel.device_summary(mesh)}, global batch {config.batch_size}', flush=True)
    if not len(dataset.val):
      print(f'warning: no held-out normal images ({threshold.no_heldout_reason(config, dataset)})'
            ': the run will have no decision threshold and no validation.json', flush=True)
  params, plan = {}, crossfit.plan(config)
  for stage in config.stages:
    frozen, folds = frozen_inputs(stage, params, config), None
    if plan and stage in plan.learners:
      if 'folds' not in params:
        fold_of = crossfit.record(workdir, config, len(dataset.train))
        params['folds'] = _train_folds(plan, config, workdir, dataset.train, fold_of, mesh,
                                       max_steps)
        if params['folds'] is None:
          return None
      folds = crossfit.members(fold_of)
      frozen.update({net: params['folds'][net] for net in methods.stage(config, stage).reads})
    params[methods.stage(config, stage).net], finished = train_stage(
        stage, config, workdir, dataset.train, frozen, mesh, max_steps, folds=folds)
    if not finished:
      return None  # stopped early, as an interrupted run would be
    faults.point(f'after-stage{stage}')
  params = parallel.to_host(params)
  checkpoints.save_bundle(workdir, params, config)
  if jax.process_index() == 0:  # evaluation runs on one process's devices, without
    # collectives, and only process 0 writes: the others would repeat it for nothing
    evaluators.run(evaluators.AFTER_TRAINING, evaluators.Context(workdir, config, params,
                                                                 dataset))
  return params
