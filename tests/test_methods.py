"""A third method, declared here and nowhere in the package: two stages (a teacher
autoencoder, then a student regressing the frozen teacher's features), registered, and
trained, resumed, validated, evaluated and swept by the generic code unchanged."""
import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from rcae_jax import api, checkpoints, files, methods, sizes, sweep, training
from rcae_jax import config as config_lib


class Teacher(nn.Module):
  features: int
  channels: int

  def setup(self):
    self.enc = nn.Conv(self.features, (3, 3))
    self.dec = nn.Conv(self.channels, (3, 3))

  def encode(self, x):
    return nn.relu(self.enc(x))

  def __call__(self, x):
    return nn.sigmoid(self.dec(self.encode(x)))


class Student(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    return nn.Conv(self.features, (3, 3))(nn.relu(nn.Conv(self.features, (3, 3))(x)))


@dataclasses.dataclass(frozen=True)
class TSModel:
  teacher: Teacher
  student: Student
  image_shape: tuple

  def init(self, net, rng):
    x = jnp.zeros((1,) + self.image_shape)
    return {'teacher': self.teacher, 'student': self.student}[net].init(rng, x)

  def raw_map(self, params, x, source, with_sequences=False):
    if source == 'ts_recon':
      recon = self.teacher.apply(params['teacher'], x)
      extra = {'recon': recon[None]} if with_sequences else {}
      return jnp.mean(jnp.abs(x - recon), -1, keepdims=True), extra
    t = self.teacher.apply(params['teacher'], x, method='encode')
    s = self.student.apply(params['student'], x)
    return jnp.mean(jnp.square(t - s), -1, keepdims=True), {}


def _build(config):
  f = config.ts_teacher.features
  return TSModel(Teacher(f, config.data.channels), Student(f),
                 sizes.image_size(config) + (config.data.channels,))


def _teacher_objective(model, config, variant=None, axis_name=None):
  def fn(params, frozen, batch, rng):
    x = batch['image']
    return jnp.mean(jnp.abs(model.teacher.apply(params, x) - x)), {}
  return fn


def _student_objective(model, config, variant=None, axis_name=None):
  def fn(params, frozen, batch, rng):
    x = batch['image']
    target = model.teacher.apply(frozen['teacher'], x, method='encode')
    return jnp.mean(jnp.square(model.student.apply(params, x) - target)), {}
  return fn


def _group(**extra):
  return ml_collections.ConfigDict(dict(steps=10, epochs=0, lr=3e-3, schedule='constant',
                                        flip='', jitter=0.0, **extra))


TS = methods.Method(
    'ts',
    stages=(methods.Stage('teacher', 'ts_teacher', _teacher_objective, source='ts_recon',
                          reconstructs=True),
            methods.Stage('student', 'ts_student', _student_objective, reads=('teacher',),
                          source='ts')),
    build=_build,
    defaults=lambda: {'ts_teacher': _group(features=8), 'ts_student': _group()},
    validate=lambda c, need: need(c.ts_teacher.features >= 1, 'ts_teacher.features >= 1'))


@pytest.fixture(scope='module')
def ts_method():
  methods.register(TS)
  yield TS
  methods.unregister('ts')


def _config(cache_dir, *overrides):
  return tiny_config(cache_dir, 'method=ts', 'stages=(1, 2)', 'ts_teacher.steps=12',
                     'ts_student.steps=8', 'ckpt_every=4', *overrides)


def test_a_third_method_trains_resumes_validates_and_evaluates(ts_method, cache_dir, tmp_path):
  config = _config(cache_dir, 'log_every=2')
  assert config.ts_teacher.features == 8 and config_lib.score_source(config) == 'ts'
  full = training.train(config, tmp_path / 'full')
  # stopped after 5 steps of stage 1 (a kill), then resumed (another log_every: bookkeeping)
  cut = config_lib.apply_overrides(config, ['log_every=5'])
  assert training.train(cut, tmp_path / 'cut', max_steps=5) is None
  assert not (tmp_path / 'cut' / 'stage2').exists()
  resumed = training.train(config, tmp_path / 'cut')
  chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))
  assert set(full) == {'teacher', 'student'}
  # the student learned the frozen teacher's features: its loss fell
  log = [r['loss'] for r in files.read_jsonl(tmp_path / 'full' / 'stage2' / 'metrics.jsonl')]
  assert np.mean(log[-1]) < np.mean(log[0])
  val = files.read_json(tmp_path / 'full' / 'validation.json')
  assert val['suppression']['recon_source'] == 'ts_recon'
  assert 0 <= val['metrics']['image_auroc'] <= 100
  assert 0 <= val['suppression']['recon_image_auroc'] <= 100
  m = api.evaluate(tmp_path / 'full')
  assert 0 <= m['mean']['image_auroc'] <= 100 and 0 <= m['mean']['aupro'] <= 100
  loaded, params = checkpoints.load_bundle(tmp_path / 'full')
  assert loaded.method == 'ts' and config_lib.same_run(loaded, config)
  # the same-run rule comes from the declaration: the student's keys never touch stage 1
  other = config_lib.apply_overrides(config, ['ts_student.lr=0.1'])
  assert config_lib.same_run(config, other, for_stage=1)
  assert not config_lib.same_run(config, other, for_stage=2)
  assert not config_lib.same_run(config, config_lib.apply_overrides(
      config, ['ts_teacher.features=4']), for_stage=2)  # it reads the teacher
  with pytest.raises(config_lib.ConfigError, match='stage 2 .student. reads'):
    config_lib.apply_overrides(config, ['stages=(2,)'])


def test_a_third_method_sweeps_and_reuses_its_first_stage(ts_method, cache_dir, tmp_path):
  preset = tmp_path / 'ts_sweep.py'
  preset.write_text(
      'def get_sweep():\n'
      f"  return {{'title': 'ts', 'config': {str(ROOT / 'experiments/configs/tiny.py')!r},\n"
      "          'variants': [('teacher', ['stages=(1,)']),\n"
      "                       ('teacher + student', ['stages=(1, 2)'])]}\n")
  overrides = ['data.resolution=16', f'data.cache_dir={cache_dir}', 'method=ts',
               'stages=(1,)', 'ts_teacher.steps=12', 'ts_student.steps=8']
  rows = sweep.run(str(preset), tmp_path / 'sweep', overrides)
  assert [r['status'] for r in rows] == ['ok', 'ok'], rows
  assert rows[1]['reused'].startswith('stage 1-1 from')
  assert 'image_auroc' in rows[1] and 'Code: runs trained by' in (
      tmp_path / 'sweep' / 'results.md').read_text()
