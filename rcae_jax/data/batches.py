"""Training batches as a pure function of (seed, step), prefetched to the devices.

The batch of step s holds positions s*B .. s*B+B-1 of an endless stream that visits the
training set in a fresh permutation each epoch. Because a batch depends on nothing but
(seed, step), the checkpointed step *is* the data position: resume is exact, and each host
reads only its own slice of every global batch.
"""
import collections
import concurrent.futures
import functools

import numpy as np

from rcae_jax import parallel


@functools.lru_cache(maxsize=8)
def _permutation(n, seed, epoch):
  return np.random.default_rng((seed, epoch)).permutation(n)


def batch_positions(step, global_batch):
  return np.arange(step * global_batch, (step + 1) * global_batch, dtype=np.int64)


def batch_indices(n, global_batch, seed, step):
  """Indices into the training array of the global batch of `step`."""
  pos = batch_positions(step, global_batch)
  return np.array([_permutation(n, seed, int(p // n))[p % n] for p in pos], np.int64)


def host_batch(images, global_batch, seed, step):
  """This host's slice: {'image': uint8 (b, H, W, C), 'index': int32 (b,) global positions}."""
  sl = parallel.process_slice(global_batch)
  idx = batch_indices(len(images), global_batch, seed, step)[sl]
  pos = batch_positions(step, global_batch)[sl]
  return {'image': images[idx], 'index': (pos % (2 ** 31 - 1)).astype(np.int32)}


def prefetch_to_device(images, global_batch, seed, start_step, end_step, mesh, depth=2):
  """Yields sharded device batches for steps start..end-1, assembled in a background thread."""
  def make(step):
    return parallel.shard_batch(host_batch(images, global_batch, seed, step), mesh)
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    queue = collections.deque()
    for step in range(start_step, end_step):
      while len(queue) < depth and step + len(queue) < end_step:
        queue.append(pool.submit(make, step + len(queue)))
      yield queue.popleft().result()
