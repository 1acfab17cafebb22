"""Cross-fitting: the stage that learns from other networks' outputs (RcAE's CRD) learns only
from outputs for images those networks never trained on.

Without it, stages 1-2 are fitted on the very images stage 3 then learns from, so the CRD
learns what reconstructions of *seen* images look like, while every image at test time is
unseen and reconstructed a little worse (`validation.json` `normal_gap` measures the
difference). Stacked models in statistics avoid this leak the same way.

With `crossfit.folds = K >= 2` the training normals split into K folds by a seeded
permutation (`assign`, recorded in <workdir>/crossfit.json). The *first-level* stages, those
whose network a later trained stage reads (RcAE: the RcAE and the DPN), train as usual on
every image and once more per fold k on the images outside fold k
(<workdir>/fold<k>/stage<j>/, resumable like any stage). The *learner*, the last stage, which
reads them and is read by none (the CRD), trains on a stream whose every batch comes from one
fold f (`data.batches.FoldStream`) with fold f's networks frozen in (`select`): every image it
learns from was reconstructed by a model that never saw it.

At test time `crossfit.infer` picks the first-level networks: 'full' (those trained on every
image: the bundle and its inference are those of a run without cross-fitting, plus the fold
networks under params['folds']) or 'folds' (the K fold models, each with the learner, their
raw maps averaged: K times the inference cost).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rcae_jax import files, methods

INFER = ('full', 'folds')


def folds(config):
  """K, or 0 when cross-fitting is off (configs saved before the key: off)."""
  group = config.get('crossfit')
  return int(group.folds) if group is not None and group.folds else 0


def infer_mode(config):
  return config.crossfit.infer if folds(config) else 'full'


@dataclasses.dataclass(frozen=True)
class Plan:
  """first_level: stages trained once more per fold; learners: stages trained on out-of-fold
  outputs; nets: the first-level stages' networks (what params['folds'] holds)."""
  folds: int
  first_level: tuple
  learners: tuple
  nets: tuple


def plan(config):
  """The cross-fitting plan of a config's active stages, or None when it is off."""
  k = folds(config)
  if not k:
    return None
  active = methods.active(config)
  read = {net for _, s in active for net in s.reads}
  first = tuple(j for j, s in active if s.net in read)
  learners = tuple(j for j, s in active if s.net not in read and s.reads)
  return Plan(k, first, learners, tuple(methods.stage(config, j).net for j in first))


def check(config, need):
  """config.validate's rules for the crossfit group."""
  k = folds(config)
  need(config.crossfit.folds == 0 or config.crossfit.folds >= 2,
       f'crossfit.folds={config.crossfit.folds} must be 0 (off) or >= 2')
  need(config.crossfit.infer in INFER,
       f'crossfit.infer={config.crossfit.infer!r} must be one of {INFER}')
  if k:
    p = plan(config)
    need(p.first_level and p.learners,
         f'crossfit.folds={k} needs a trained stage that reads another trained stage\'s '
         f'network (stages={tuple(config.stages)} of method {config.method!r} have none)')


def assign(n, k, seed):
  """The fold of each of n training images: a seeded permutation dealt round-robin, so the
  folds differ in size by at most one."""
  if n < k:
    raise ValueError(f'crossfit.folds={k} needs at least {k} training images (have {n})')
  out = np.empty(n, np.int32)
  out[np.random.default_rng((seed, 0xC0F, k)).permutation(n)] = np.arange(n) % k
  return out


def members(fold_of):
  """[indices of the images in fold f] for f = 0..K-1."""
  return [np.flatnonzero(fold_of == f) for f in range(int(fold_of.max()) + 1)]


def record(workdir, config, n_train):
  """Writes (or, resuming, checks) <workdir>/crossfit.json -> the fold of each image."""
  k = folds(config)
  fold_of = assign(n_train, k, config.data.seed)
  info = {'folds': k, 'seed': config.data.seed, 'n_train': n_train,
          'fold_of_image': fold_of.tolist(),
          'trained_on': {f'fold{f}': np.flatnonzero(fold_of != f).tolist() for f in range(k)},
          'why': 'fold k\'s first-level networks trained on trained_on[fold k]; the learner '
                 'saw fold k\'s images only through them'}
  path = workdir / 'crossfit.json'
  if path.exists() and files.read_json(path)['fold_of_image'] != info['fold_of_image']:
    raise ValueError(f'{path}: the saved fold assignment differs from this data\'s '
                     f'({n_train} training images): the data changed; use a new --workdir')
  if jax.process_index() == 0:
    files.write_json(path, info)
  return fold_of


class Subset:
  """A read-only view of `images` at `indices` (a fold's complement), with a description
  grain can check on resume."""

  def __init__(self, images, indices, tag):
    self._images, self._indices = images, np.asarray(indices, np.int64)
    self.shape = (len(self._indices),) + tuple(np.shape(images)[1:])
    self.dtype = getattr(images, 'dtype', np.uint8)
    base = getattr(images, 'description', None) or f'array{tuple(np.shape(images))}'
    self.description = f'{base}[{tag}:{len(self._indices)}]'

  def __len__(self):
    return len(self._indices)

  def __getitem__(self, key):
    if isinstance(key, (int, np.integer)):
      return np.asarray(self._images[int(self._indices[key])])
    return np.stack([np.asarray(self._images[int(i)]) for i in self._indices[key]])

  def __array__(self, dtype=None, copy=None):
    del copy
    out = self[np.arange(len(self))]
    return out if dtype is None else out.astype(dtype)


# jitted (here and in `select`): one program for all leaves, not one per leaf shape
@jax.jit
def stack(per_fold):
  """[{net: params}] of the K folds -> {net: params with a leading fold axis}."""
  return jax.tree.map(lambda *a: jnp.stack(a), *per_fold)


@jax.jit
def select(stacked, fold):
  """The params of one fold (a traced scalar is fine) from `stack`'s output."""
  return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, fold, keepdims=False),
                      stacked)


def of_fold(params, k):
  """A run's params with its first-level networks replaced by fold k's."""
  return {**params, **select(params['folds'], k)}


def raw_map(model, params, x, source, with_sequences, config):
  """model.raw_map, or with crossfit.infer='folds' the mean over the K fold models (their
  sequences averaged too)."""
  if infer_mode(config) != 'folds':
    return model.raw_map(params, x, source, with_sequences)
  if 'folds' not in params:
    raise ValueError('crossfit.infer=folds needs a run trained with crossfit.folds >= 2')
  outs = [model.raw_map(of_fold(params, k), x, source, with_sequences)
          for k in range(folds(config))]
  mean = lambda *a: sum(a) / len(a)
  return mean(*[o[0] for o in outs]), jax.tree.map(mean, *[o[1] for o in outs])
