"""Training batches as a pure function of (seed, step), read through grain, prefetched to the
devices.

The batch of step s holds positions s*B .. s*B+B-1 of an endless stream that visits the
training set in a fresh permutation each epoch. Because a batch depends on nothing but
(seed, step), numbers do not depend on the device or host count, and each host reads only
its own contiguous slice of every global batch (the slice its devices train on).

grain does the reading: `Stream` is the random-access source (stream position -> example),
`HostSlices` the sampler that gives this process its positions; grain's sharding by process
(`ShardOptions(process_index, process_count)`) hands each process every P-th sampler index
and `HostSlices` maps those to the process's slice. grain's own `IndexSampler` shards the
*records* per process instead, which would make a global batch depend on the host count.
The grain iterator state after each batch travels with it, so a checkpoint saves the exact
data position (`checkpoints.save`), and a resumed run continues on the exact next batch.
"""
import collections
import concurrent.futures
import functools
import json

import grain.python as grain
import jax
import numpy as np

from rcae_jax import parallel, trace

_INDEX_MOD = 2 ** 31 - 1  # per-example seeds are int32: positions wrap here


@functools.lru_cache(maxsize=8)
def _permutation(n, seed, epoch, fold=None):
  key = (seed, epoch) if fold is None else (seed, epoch, 0xF01D, fold)
  return np.random.default_rng(key).permutation(n)


def batch_positions(step, global_batch):
  return np.arange(step * global_batch, (step + 1) * global_batch, dtype=np.int64)


def batch_indices(n, global_batch, seed, step):
  """Indices into the training images of the global batch of `step`."""
  pos = batch_positions(step, global_batch)
  return np.array([_permutation(n, seed, int(p // n))[p % n] for p in pos], np.int64)


def host_batch(images, global_batch, seed, step):
  """This host's slice, read directly: {'image': uint8 (b, H, W, C), 'index': int32 (b,)}."""
  sl = parallel.process_slice(global_batch)
  idx = batch_indices(len(images), global_batch, seed, step)[sl]
  pos = batch_positions(step, global_batch)[sl]
  return {'image': np.stack([np.asarray(images[int(i)]) for i in idx]),
          'index': (pos % _INDEX_MOD).astype(np.int32)}


def describe(images):
  """A short stable description (grain checks it when a saved state is restored)."""
  return getattr(images, 'description', None) or (
      f'array{tuple(np.shape(images))}:{np.asarray(images).dtype}')


class Stream:
  """grain source over the endless stream: position -> {'image', 'index'}."""

  def __init__(self, images, seed):
    if not len(images):
      raise ValueError('no training images')
    self.images, self.seed, self.n = images, seed, len(images)

  def __len__(self):
    return 2 ** 62  # endless; grain reduces keys modulo this

  def __getitem__(self, position):
    epoch, i = divmod(int(position), self.n)
    trace.record('reads', position)
    image = np.asarray(self.images[int(_permutation(self.n, self.seed, epoch)[i])])
    return {'image': image, 'index': np.int32(position % _INDEX_MOD)}

  def __repr__(self):
    return f'Stream(images={describe(self.images)}, seed={self.seed})'


class FoldStream(Stream):
  """The cross-fitted learner's stream (`rcae_jax/crossfit.py`): the batch of step s comes
  from fold s mod K alone, read from that fold's own endless stream of fresh permutations,
  so one fold's frozen networks serve the whole batch on every device. Examples carry their
  'fold'."""

  def __init__(self, images, seed, global_batch, folds):
    super().__init__(images, seed)
    self.global_batch = global_batch
    self.folds = [np.asarray(f, np.int64) for f in folds]
    if not all(len(f) for f in self.folds):
      raise ValueError('every fold needs at least one image')

  def image_index(self, position):
    """-> (index into images, fold) of a stream position."""
    step, j = divmod(int(position), self.global_batch)
    fold = step % len(self.folds)
    members = self.folds[fold]
    epoch, i = divmod((step // len(self.folds)) * self.global_batch + j, len(members))
    return int(members[_permutation(len(members), self.seed, epoch, fold)[i]]), fold

  def __getitem__(self, position):
    i, fold = self.image_index(position)
    trace.record('reads', position)
    return {'image': np.asarray(self.images[i]), 'index': np.int32(position % _INDEX_MOD),
            'fold': np.int32(fold)}

  def __repr__(self):
    sizes = [len(f) for f in self.folds]
    digest = hash(tuple(int(i) for f in self.folds for i in f[:64])) & 0xffffffff
    return (f'FoldStream(images={describe(self.images)}, seed={self.seed}, '
            f'batch={self.global_batch}, folds={sizes}:{digest:08x})')


class HostSlices:
  """grain sampler: index g = k * P + p (grain's share for process p of P) -> the stream
  position of the k-th example process p reads (its slice of each global batch, in order)."""

  def __init__(self, global_batch, num_processes):
    if global_batch % num_processes:
      raise ValueError(f'global batch {global_batch} does not split over {num_processes} hosts')
    self.global_batch, self.num_processes = global_batch, num_processes
    self.per_host = global_batch // num_processes

  def __len__(self):
    return 2 ** 62  # endless, like the stream: the loop decides where a stage ends

  def __getitem__(self, g):
    if not 0 <= g < len(self):
      raise IndexError(g)
    k, p = divmod(int(g), self.num_processes)
    step, j = divmod(k, self.per_host)
    return grain.RecordMetadata(index=int(g),
                                record_key=step * self.global_batch + p * self.per_host + j)

  def __repr__(self):
    return f'HostSlices(global_batch={self.global_batch}, num_processes={self.num_processes})'


def loader(images, global_batch, seed, read_threads=4, folds=None):
  """The grain DataLoader of this process's batches, from step 0 on (with `folds`, the
  indices of each fold's images: a `FoldStream`)."""
  source = (Stream(images, seed) if folds is None
            else FoldStream(images, seed, global_batch, folds))
  return grain.DataLoader(
      data_source=source,
      sampler=HostSlices(global_batch, jax.process_count()),
      operations=[grain.Batch(global_batch // jax.process_count(), drop_remainder=True)],
      worker_count=0,
      shard_options=grain.ShardOptions(jax.process_index(), jax.process_count()),
      read_options=grain.ReadOptions(num_threads=max(1, read_threads),
                                     prefetch_buffer_size=2 * global_batch))


def state_at(data_loader, step, global_batch):
  """The iterator state that resumes `data_loader` at `step` (for checkpoints written before
  the state was saved with them): grain's state names the last sampler index read."""
  state = json.loads(iter(data_loader).get_state())
  per_host = global_batch // jax.process_count()
  state['last_seen_indices'] = {
      '0': (step * per_host - 1) * jax.process_count() + jax.process_index()}
  return json.dumps(state).encode()


class DataPositionError(RuntimeError):
  pass


def prefetch_to_device(images, global_batch, seed, start_step, end_step, mesh, depth=2,
                       state=None, read_threads=4, folds=None):
  """Yields (sharded device batch, grain state after it) for steps start..end-1.

  `state` (bytes, from a checkpoint) restores grain's iterator; it must point at start_step.
  """
  data_loader = loader(images, global_batch, seed, read_threads, folds)
  it = iter(data_loader)
  if start_step:
    it.set_state(state if state is not None else state_at(data_loader, start_step, global_batch))
  expected_first = start_step * global_batch + parallel.process_slice(global_batch).start

  def make():
    batch = next(it)
    return parallel.shard_batch(batch, mesh), it.get_state(), int(batch['index'][0])

  with concurrent.futures.ThreadPoolExecutor(1) as pool:  # one thread: grain reads in order
    queue = collections.deque()
    for step in range(start_step, end_step):
      while len(queue) < depth and step + len(queue) < end_step:
        queue.append(pool.submit(make))
      batch, after, first = queue.popleft().result()
      if step == start_step and first != expected_first % _INDEX_MOD:
        raise DataPositionError(
            f'the saved data position reads stream position {first}, but step {start_step} '
            f'starts at {expected_first}: the checkpoint does not belong to this data/config')
      yield batch, after
