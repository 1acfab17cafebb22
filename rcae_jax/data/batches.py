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
def _permutation(n, seed, epoch):
  return np.random.default_rng((seed, epoch)).permutation(n)


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


def loader(images, global_batch, seed, read_threads=4):
  """The grain DataLoader of this process's batches, from step 0 on."""
  return grain.DataLoader(
      data_source=Stream(images, seed),
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
                       state=None, read_threads=4):
  """Yields (sharded device batch, grain state after it) for steps start..end-1.

  `state` (bytes, from a checkpoint) restores grain's iterator; it must point at start_step.
  """
  data_loader = loader(images, global_batch, seed, read_threads)
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
