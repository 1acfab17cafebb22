"""Pseudo-anomaly synthesis, vmapped (every shape and filler computed for every example) vs
mapped (only each example's own): XLA's temporary memory of the compiled program and the
median time per batch, with every shape and filler enabled.

  python experiments/synthesis_memory.py --resolution 128 512 --batch 8
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from rcae_jax import anomalies  # noqa: E402  pylint: disable=g-import-not-at-top
from rcae_jax import config as config_lib  # noqa: E402  pylint: disable=g-import-not-at-top


def main():
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument('--resolution', type=int, nargs='+', default=[128, 512])
  ap.add_argument('--batch', type=int, default=8)
  ap.add_argument('--iters', type=int, default=3)
  args = ap.parse_args()
  rows = []
  for res in args.resolution:
    for mode in ('vmap', 'map'):
      config = config_lib.load_config('tiny', [
          f'data.resolution={res}', f'anomaly.batching={mode}',
          f"anomaly.shapes={tuple(anomalies.SHAPES)}",
          f"anomaly.fillers={tuple(anomalies.FILLERS)}"])
      key = jax.random.PRNGKey(0)
      images = jax.random.uniform(key, (args.batch, res, res, 3))
      textures = jnp.asarray(anomalies.texture_bank(res, 3, per_source=1))
      fn = jax.jit(lambda k, x, i, t, c=config: anomalies.synthesize_batch(k, x, i, t, c))
      t0 = time.perf_counter()
      compiled = fn.lower(key, images, jnp.arange(args.batch), textures).compile()
      compile_s = time.perf_counter() - t0
      jax.block_until_ready(compiled(key, images, jnp.arange(args.batch), textures))
      times = []
      for i in range(args.iters):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(jax.random.PRNGKey(i), images, jnp.arange(args.batch),
                                       textures))
        times.append(time.perf_counter() - t0)
      row = {'resolution': res, 'batch': args.batch, 'batching': mode,
             'temp_mib': compiled.memory_analysis().temp_size_in_bytes / 2 ** 20,
             'compile_s': compile_s, 'median_s': statistics.median(times),
             'device': jax.devices()[0].device_kind}
      rows.append(row)
      print(json.dumps(row), flush=True)


if __name__ == '__main__':
  main()
