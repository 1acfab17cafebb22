"""Training: losses fall, exact resume, 1 vs 4 devices, the CRD localises."""
import json
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from rcae_jax import anomalies, checkpoints, crossfit, files, inference, methods, metrics
from rcae_jax import parallel, training
from rcae_jax import config as config_lib
from rcae_jax import data as data_lib
from rcae_jax import model as model_lib


def _losses(workdir, stage):
  return [r['loss'] for r in files.read_jsonl(workdir / f'stage{stage}' / 'metrics.jsonl')]


def test_each_stage_lowers_its_loss(trained_run):
  """Each stage's loss on one fixed batch and key: trained params beat the initial ones.
  (The logged per-step losses depend on which pseudo-anomalies each step drew.)"""
  config, params = checkpoints.load_bundle(trained_run)
  images = data_lib.load(config).train[:8]
  batch = {'image': jnp.asarray(images, jnp.float32) / 255.0, 'index': jnp.arange(8)}
  model = model_lib.from_config(config)
  key = jax.random.PRNGKey(3)
  for stage in (1, 2, 3):
    assert len(_losses(trained_run, stage)) >= 3
    spec = methods.stage(config, stage)
    loss_fn = jax.jit(spec.objective(model, config, spec.variants(config)[-1]))
    frozen = training.frozen_inputs(stage, params, config)
    at = lambda p, f=frozen, fn=loss_fn: float(np.mean([fn(p, f, batch, jax.random.fold_in(
        key, i))[0] for i in range(4)]))
    before = at(model_lib.init_for_stage(config, stage))
    after = at(params[spec.net])
    # the DPN starts as the identity (D_n = R_n), so its first steps gain little
    assert after < (0.99 if stage == 2 else 0.9) * before, (stage, before, after)


def test_run_writes_bundle_config_env_and_calibration(trained_run):
  for name in ('config.json', 'env.json', 'calibration.json', 'model/config.json'):
    assert (trained_run / name).exists(), name
  env = files.json.loads((trained_run / 'env.json').read_text())
  assert env['device_count'] == 4 and len(env['devices']) == 4
  cal = files.json.loads((trained_run / 'calibration.json').read_text())
  assert cal['n_val'] > 0 and np.isfinite(cal['threshold'])


def test_crd_localises_its_own_pseudo_anomalies(trained_run):
  """The shared tiny run's CRD (40 steps at 16²) on pseudo-anomalies it never saw (held-out
  and training images, a texture bank from other crops): pixel AUROC well above chance and
  above the same pipeline with an untrained CRD. Measured 0.91 vs 0.54 when written
  (0.91-0.96 over three training seeds and two anomaly draws; untrained 0.45-0.55)."""
  config, params = checkpoints.load_bundle(trained_run)
  ds = data_lib.load(config)
  x = jnp.asarray(np.concatenate([ds.val, ds.train[:24]]), jnp.float32) / 255
  bank = jnp.asarray(anomalies.texture_bank(config.data.size, 3, seed=7))
  config.anomaly.p_clean = 0.0
  xt, m = jax.jit(lambda k, im, i: anomalies.synthesize_batch(k, im, i, bank, config))(
      jax.random.PRNGKey(99), x, jnp.arange(len(x)))
  xt = np.asarray(jnp.round(xt * 255)).astype(np.uint8)
  untrained = dict(params, crd=model_lib.from_config(config).init('crd', jax.random.PRNGKey(0)))
  auroc = {name: metrics.auroc(inference.run(config, p, xt)['map'].ravel(),
                               np.asarray(m).ravel() > 0.5)
           for name, p in (('trained', params), ('untrained', untrained))}
  assert auroc['trained'] > 0.8 and auroc['trained'] > auroc['untrained'] + 0.25, auroc


def _stage_config(tmp_path, *ov):
  return tiny_config(tmp_path / 'cache', 'stage1.steps=6', 'stage2.steps=6', 'stage3.steps=6',
                     'log_every=1', 'ckpt_every=2', 'model.depth=2',
                     'model.crd_pos_weight=0.0', *ov)  # balanced: counted over all devices


def _frozen(config, stage):
  params = model_lib.init_all(config, jax.random.PRNGKey(5))
  return training.frozen_inputs(stage, params, config)


@pytest.mark.parametrize('stage', [1, 2, 3, 'fae'])
def test_four_devices_equal_one_device(tmp_path, stage):
  """Losses to 1e-5 relative, parameters to 1e-5 absolute after 6 Adam steps (lr 2e-3).

  The pmean adds per-device means in another order than one device's mean over the whole
  batch: float32 reassociation, ~1e-7 relative in the gradients. Adam divides by sqrt(v),
  so where a gradient is itself ~1e-7 that difference moves the update by a visible
  fraction of lr; 1e-5 (lr/200) bounds it, while any real divergence (a wrong shard, a
  missing pmean) moves parameters by ~lr per step. Stage 2 gets 5e-4 (lr/4; seen: 312 of
  4099 weights beyond 1e-5, all within 5e-4): the DPN's
  zero-initialised output layer leaves its inner layers' gradients near 0 for the first
  steps, exactly where Adam's normalisation amplifies the reassociation noise. FAE gets the
  same (seen: 2.6e-4 on 1 of 9216 weights of one decoder conv, every other weight within
  1e-5 and the losses within 1e-5): a missing pmean or a wrong shard would move them all.
  Stage 3 too (seen at f253e4e on a 2-core Xeon: 3.2e-5 on 1 of 2304 CRD weights, the rest
  within 1e-5); it runs cross-fitted (two folds, two different frozen RcAE/DPN pairs picked
  per batch), which reads the same objective as without."""
  fae = stage == 'fae'  # FAE's one stage: same machinery, its own network and objective
  config = _stage_config(tmp_path, *(['method=fae', 'stages=(1,)', 'fae.steps=6', 'fae.lr=2e-3',
                                      'fae.features=8',
                                      'fae.levels=3'] if fae else []),
                         *(['stage3.flip=hv', 'stage3.jitter=0.3', 'stage3.recon_noise=0.02']
                           if stage == 3 else []),
                         # stage 1 on 8² crops of 16x24 images: crops by position too
                         *(['data.size=(16, 24)', 'stage1.crop=8',  # one program per mesh:
                            'depth_sampling=max'] if stage == 1 else []))  # compiling is the cost
  stage = 1 if fae else stage
  images = data_lib.load(config).train
  frozen, folds = _frozen(config, stage), None
  if stage == 3:
    other = model_lib.init_all(config, jax.random.PRNGKey(6))
    frozen.update(crossfit.stack([{n: frozen[n] for n in ('rcae', 'dpn')},
                                  {n: other[n] for n in ('rcae', 'dpn')}]))
    folds = crossfit.members(crossfit.assign(len(images), 2, 0))
  results = {}
  for n_dev in (1, 4):
    mesh = parallel.make_mesh(jax.devices()[:n_dev])
    wd = tmp_path / f'dev{n_dev}'
    results[n_dev] = training.train_stage(stage, config, wd, images, frozen, mesh,
                                          folds=folds)[0]
    results[n_dev, 'loss'] = _losses(wd, stage)
  assert len(results[1, 'loss']) == 6
  np.testing.assert_allclose(results[1, 'loss'], results[4, 'loss'], rtol=1e-5)
  chex.assert_trees_all_close(results[1], results[4], rtol=0,
                              atol=5e-4 if stage in (2, 3) or fae else 1e-5)


def test_every_example_lands_on_exactly_one_device(tmp_path):
  mesh = parallel.make_mesh()
  images = np.arange(10)[:, None, None, None].astype(np.uint8) * np.ones((1, 4, 4, 1), np.uint8)
  batch = parallel.shard_batch(
      {'image': images[:8], 'index': np.arange(8, dtype=np.int32)}, mesh)
  shards = batch['index'].addressable_shards
  assert len(shards) == 4
  seen = np.concatenate([np.asarray(s.data) for s in shards])
  assert sorted(seen.tolist()) == list(range(8))
  assert {s.device for s in shards} == set(jax.devices())


def test_indivisible_batch_refused():
  mesh = parallel.make_mesh()
  with pytest.raises(ValueError, match='batch_size=6 cannot be split over 4 devices'):
    parallel.local_batch_size(6, mesh)
  with pytest.raises(ValueError, match='per-device batch 0.5'):
    parallel.local_batch_size(2, mesh)


@pytest.mark.parametrize('stage,source', [(1, 'files'), (3, 'files'), (1, 'prepared')])
def test_resume_after_interruption_is_exact(tmp_path, stage, source):
  """Killed after step 7 (its checkpoint lost): the run resumes from step 6's params and
  grain iterator state, and ends bit-identical to an uninterrupted run, whether the images
  are in memory or read lazily from prepared array_record (stage 3 on 8² crops)."""
  config = _stage_config(tmp_path, 'stage1.steps=9', 'stage3.steps=9', f'data.source={source}',
                         'stage3.crop=8')  # stage 3 on crops: their positions resume too
  if source == 'prepared':
    data_lib.prepare(config)
  images = data_lib.load(config).train
  mesh = parallel.make_mesh()
  frozen = _frozen(config, stage)
  full, _ = training.train_stage(stage, config, tmp_path / 'a', images, frozen, mesh)
  wd = tmp_path / 'b'
  _, finished = training.train_stage(stage, config, wd, images, frozen, mesh, max_steps=7)
  assert not finished
  shutil.rmtree(wd / f'stage{stage}' / 'ckpt' / '7')  # killed after step 7, before its save
  assert len(_losses(wd, stage)) == 7
  saved = files.read_json(wd / f'stage{stage}' / 'ckpt' / '6' / 'data' / 'process_0-of-1.json')
  assert saved['last_seen_indices'] == {'0': 6 * config.batch_size - 1}  # grain's own state
  resumed, finished = training.train_stage(stage, config, wd, images, frozen, mesh)
  assert finished
  assert _losses(wd, stage) == _losses(tmp_path / 'a', stage)
  if source == 'prepared':  # the same numbers as from memory
    ref, _ = training.train_stage(stage, config_lib.apply_overrides(config, ['data.source=files']),
                               tmp_path / 'c', data_lib.load(config_lib.apply_overrides(
                                   config, ['data.source=files'])).train, frozen, mesh)
    chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(ref))
  chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))


def test_depth_schedule_compiles_once_per_depth(tmp_path):
  """Twelve stage-1 steps over depths {1, 2, 3} build three programs, each compiled once;
  running the stage again (a resume, a sweep's next variant) compiles nothing."""
  config = _stage_config(tmp_path, 'stage1.steps=12', 'model.depth=3', 'ckpt_every=100')
  depths = [training.variant_of_step(config, 1, s) for s in range(12)]
  assert set(depths) == {1, 2, 3}
  other = config_lib.apply_overrides(config, ['data.seed=1'])
  assert depths != [training.variant_of_step(other, 1, s) for s in range(12)]  # seed-dependent
  images = data_lib.load(config).train
  mesh = parallel.make_mesh()
  training.train_stage(1, config, tmp_path / 'a', images, _frozen(config, 1), mesh)
  step = training.train_step(1, config, mesh)
  assert sorted(step.programs) == [1, 2, 3]
  assert [p._cache_size() for p in step.programs.values()] == [1, 1, 1]  # pylint: disable=protected-access
  training.train_stage(1, config, tmp_path / 'b', images, _frozen(config, 1), mesh)
  assert training.train_step(1, config, mesh) is step
  assert [p._cache_size() for p in step.programs.values()] == [1, 1, 1]  # pylint: disable=protected-access
  # another run's length, logging and data folder: host-only keys, the same programs
  longer = config_lib.apply_overrides(config, ['stage1.steps=13', 'stage2.epochs=7',
                                               'log_every=5', f'data.cache_dir={tmp_path}'])
  training.train_stage(1, longer, tmp_path / 'c', images, _frozen(config, 1), mesh)
  assert training.train_step(1, longer, mesh) is step
  assert [p._cache_size() for p in step.programs.values()] == [1, 1, 1]  # pylint: disable=protected-access
  assert len(files.read_jsonl(tmp_path / 'c' / 'stage1' / 'metrics.jsonl')) == 3  # 5, 10, 13
  for key in ('stage1.lr=1e-3', 'stage1.noise=0.0', 'data.seed=1', 'grad_weight=0.5'):
    assert training.train_step(1, config_lib.apply_overrides(config, [key]), mesh) is not step


def test_program_key_leaves_out_exactly_the_host_only_keys(tmp_path):
  config = _stage_config(tmp_path)
  key = json.loads(config_lib.program_json(config))
  flat = config_lib.flat(config)
  left_out = sorted(set(flat) - set(config_lib.flat(config_lib.from_dict(key))))
  groups_with_length = sorted(k.split('.')[0] for k in flat if k.endswith('.steps')
                              and k.count('.') == 1)
  assert groups_with_length == ['fae', 'stage1', 'stage2', 'stage3']
  assert left_out == sorted([*methods.HOST_ONLY, *(f'{g}.{n}' for g in groups_with_length
                                                   for n in ('steps', 'epochs'))])
  rebuilt = config_lib.from_dict(key)
  with pytest.raises(AttributeError):  # code in a program reading one fails, loudly
    _ = rebuilt.stage1.steps
  assert rebuilt.stage1.lr == config.stage1.lr and rebuilt.model.depth == config.model.depth


def test_validation_scores_held_out_pseudo_anomalies(trained_run):
  val = files.json.loads((trained_run / 'validation.json').read_text())
  assert val['n_images'] >= 2 and val['n_images'] % 2 == 0
  for k in metrics.METRICS:
    assert 0 <= val['metrics'][k] <= 100, (k, val)


def test_cosine_schedule_decays_to_zero_over_the_stage(tmp_path):
  """stage3.schedule=cosine: the learning rate after k of T updates is lr (1 + cos(pi k/T)) / 2
  (read from the optimizer state, which a checkpoint carries); constant keeps lr."""
  config = _stage_config(tmp_path, 'stage3.schedule=cosine', 'stage3.lr=0.01')
  params = {'w': jnp.ones(3)}
  for schedule, expect in (('cosine', lambda k: 0.005 * (1 + np.cos(np.pi * k / 8))),
                           ('constant', lambda k: 0.01)):
    stage = config_lib.apply_overrides(config, [f'stage3.schedule={schedule}']).stage3
    tx = training.optimizer(stage, total_steps=8)
    state = tx.init(params)
    for k in range(9):
      _, state = tx.update({'w': jnp.ones(3)}, state, params)
      np.testing.assert_allclose(float(state.hyperparams['learning_rate']), expect(k), atol=1e-7)
      lr = training.learning_rate(stage, total_steps=8)  # what metrics.jsonl logs as 'lr'
      np.testing.assert_allclose(float(lr(k) if callable(lr) else lr), expect(k), atol=1e-7)
  with pytest.raises(ValueError, match='total steps'):
    training.optimizer(config.stage3)


def test_weight_decay_is_decoupled_and_off_by_default(tmp_path):
  """stageK.weight_decay=d: with a zero gradient an update moves each weight by -lr d w
  (AdamW's decoupled decay); 0 is plain Adam: the weight stays."""
  params = {'w': jnp.array([1.0, -2.0, 4.0])}
  zero = {'w': jnp.zeros(3)}
  for decay in (0.0, 0.05):
    stage = _stage_config(tmp_path, 'stage3.lr=0.01', f'stage3.weight_decay={decay}').stage3
    tx = training.optimizer(stage)
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates['w'], -0.01 * decay * params['w'], rtol=1e-6, atol=0)
  with pytest.raises(config_lib.ConfigError, match='stage3.weight_decay must be >= 0'):
    _stage_config(tmp_path, 'stage3.weight_decay=-1.0')
