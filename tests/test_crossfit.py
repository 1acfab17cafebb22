"""Cross-fitting's parts, without training: the fold assignment, the learner's fold stream,
which stages train per fold, and the config rules. (Trained, killed and resumed:
tests/test_preemption.py; 1 vs 4 devices: tests/test_train.py.)"""
import numpy as np
import pytest

from conftest import tiny_config
from rcae_jax import config as config_lib
from rcae_jax import crossfit
from rcae_jax.data import batches


def test_assignment_is_balanced_seeded_and_a_partition():
  a = crossfit.assign(11, 3, seed=4)
  assert sorted(np.bincount(a).tolist()) == [3, 4, 4]
  np.testing.assert_array_equal(a, crossfit.assign(11, 3, seed=4))
  assert not np.array_equal(a, crossfit.assign(11, 3, seed=5))
  members = crossfit.members(a)
  assert sorted(np.concatenate(members).tolist()) == list(range(11))
  with pytest.raises(ValueError, match='at least 3 training images'):
    crossfit.assign(2, 3, seed=0)


def test_fold_stream_batches_come_from_one_fold_and_visit_each_image_once_per_epoch():
  members = [np.array([0, 3, 5, 6, 9]), np.array([1, 2, 4, 7, 8, 10])]
  images = np.arange(11)[:, None]
  stream = batches.FoldStream(images, 0, 4, members)
  by_fold = {0: [], 1: []}
  for step in range(12):
    read = [stream[p] for p in range(step * 4, step * 4 + 4)]
    assert {int(r['fold']) for r in read} == {step % 2}
    assert [int(r['index']) for r in read] == list(range(step * 4, step * 4 + 4))
    by_fold[step % 2] += [int(r['image'][0]) for r in read]
  for f, seen in by_fold.items():  # 24 reads per fold: whole epochs, each a permutation
    n = len(members[f])
    for e in range(24 // n):
      assert sorted(seen[e * n:(e + 1) * n]) == sorted(members[f].tolist())
  assert stream.image_index(13) == (int(stream[13]['image'][0]), 1)
  assert repr(stream) != repr(batches.FoldStream(images, 0, 4, members[::-1]))


def test_plan_names_first_level_stages_and_the_learner(tmp_path):
  p = crossfit.plan(tiny_config(tmp_path, 'crossfit.folds=3'))
  assert (p.folds, p.first_level, p.learners, p.nets) == (3, (1, 2), (3,), ('rcae', 'dpn'))
  p = crossfit.plan(tiny_config(tmp_path, 'crossfit.folds=2', 'stages=(1, 2)'))
  assert (p.first_level, p.learners) == ((1,), (2,))
  assert crossfit.plan(tiny_config(tmp_path)) is None


@pytest.mark.parametrize('overrides, message', [
    (['crossfit.folds=1'], 'crossfit.folds=1 must be 0 (off) or >= 2'),
    (['crossfit.infer=mean'], "crossfit.infer='mean' must be one of"),
    (['crossfit.folds=2', 'stages=(1,)'], 'needs a trained stage that reads another'),
    (['crossfit.folds=2', 'method=fae', 'stages=(1,)'], "of method 'fae' have none"),
])
def test_bad_crossfit_settings_are_refused(tmp_path, overrides, message):
  with pytest.raises(config_lib.ConfigError, match=message.replace('(', r'\(').replace(
      ')', r'\)')):
    tiny_config(tmp_path, *overrides)


def test_crossfit_folds_belongs_to_the_learner_not_to_stages_1_2(tmp_path):
  """Stage 1 of a cross-fitted run is the same computation as without (a sweep reuses it);
  stage 3 is not."""
  plain, fitted = tiny_config(tmp_path), tiny_config(tmp_path, 'crossfit.folds=2')
  assert config_lib.same_run(plain, fitted, for_stage=1)
  assert not config_lib.same_run(plain, fitted, for_stage=3)
  assert not config_lib.same_run(plain, fitted)
  infer = tiny_config(tmp_path, 'crossfit.folds=2', 'crossfit.infer=folds')
  assert config_lib.same_run(fitted, infer, for_stage=3)


def test_subset_is_a_view_with_its_own_description():
  images = np.arange(6 * 2).reshape(6, 2, 1, 1).astype(np.uint8)
  sub = crossfit.Subset(images, [4, 1], 'not fold 0')
  assert len(sub) == 2 and sub.shape == (2, 2, 1, 1)
  np.testing.assert_array_equal(sub[1], images[1])
  np.testing.assert_array_equal(np.asarray(sub), images[[4, 1]])
  assert 'not fold 0:2' in sub.description
