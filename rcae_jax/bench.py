"""Reproducible jitted benchmarks -> JSON: compile time, step time, FLOPs, memory, output hash.

Every step is the code training and evaluation run: the programs of `training.train_step`,
and `inference.compiled` (the one inference path, over the same mesh).
"""
import functools
import hashlib
import itertools
import statistics
import time

import jax
import numpy as np

from rcae_jax import config as config_lib
from rcae_jax import files, host, inference, methods, op_profile, parallel, runinfo, sizes, training
from rcae_jax import model as model_lib
from rcae_jax.data import batches
from rcae_jax.models import layers

STEPS = ('train1', 'train2', 'train3', 'infer', 'input')
# Dense peak FLOP/s per device: bf16 tensor cores, and TF32 (what XLA uses for f32 matmuls
# and convolutions on Hopper by default). CPUs have no entry: pass --peak-tflops.
PEAKS = {
    'NVIDIA H100 80GB HBM3': {'bfloat16': 989e12, 'float32': 494e12},
    'NVIDIA H100': {'bfloat16': 989e12, 'float32': 494e12},
    'NVIDIA H200': {'bfloat16': 989e12, 'float32': 494e12},
    'NVIDIA A100-SXM4-80GB': {'bfloat16': 312e12, 'float32': 156e12},
    'TPU v4': {'bfloat16': 275e12, 'float32': 275e12},
    'TPU v5 lite': {'bfloat16': 197e12, 'float32': 197e12},
}


def median_seconds(fn, args, iters):
  """The median wall time of `iters` calls of fn(*args) after one warm-up call (compiles)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def measure_peak(device, n=2048, copy_mib=256, iters=5):
  """What this device reaches, measured in the same run as the steps (CPUs have no table
  entry): FLOP/s of an n×n×n matmul in float32 and in bfloat16 (f32 accumulation), and the
  memory bandwidth of a copy (bytes read + written per second)."""
  out = {'matmul_n': n, 'copy_mib': copy_mib, 'iters': iters}
  with jax.default_device(device):
    for dtype in ('float32', 'bfloat16'):
      a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
      mm = jax.jit(lambda x, y: jax.lax.dot(x, y, preferred_element_type=jax.numpy.float32))
      out[f'{dtype}_flops_per_s'] = 2 * n ** 3 / median_seconds(mm, (a, a), iters)
    x = jax.numpy.ones((copy_mib * 2 ** 20 // 4,), jax.numpy.float32)
    copy = jax.jit(lambda v: v * 1.0001)  # one read and one write of every element
    out['copy_bytes_per_s'] = 2 * x.nbytes / median_seconds(copy, (x,), iters)
  return out


def _hash(tree):
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(tree)):
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()[:16]


def _cost(programs):
  """(FLOPs, source) from XLA's cost analysis of the lowered program, else the compiled one.

  The compiled module is the wrong place to count: on GPU, XLA turns convolutions into
  cuDNN custom calls whose FLOPs its cost analysis leaves out (it reported 4.9 GFLOP for a
  256² stage-1 step whose convolutions are ~580 GFLOP by hand count), while the lowered
  module still holds plain convolutions.
  """
  for source, stage in zip(('lowered', 'compiled'), programs):
    try:
      cost = stage.cost_analysis()
    except Exception:  # pylint: disable=broad-except
      cost = None
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else None
    if cost and cost.get('flops', -1) > 0:
      return float(cost['flops']), source, float(cost.get('bytes accessed', float('nan')))
  return float('nan'), None, float('nan')


def _memory(compiled):
  """XLA's own accounting of the compiled program (per device): total, and its parts."""
  try:
    m = compiled.memory_analysis()
    return {'compiled_bytes': int(m.temp_size_in_bytes + m.argument_size_in_bytes
                                  + m.output_size_in_bytes - m.alias_size_in_bytes),
            'temp_bytes': int(m.temp_size_in_bytes),
            'argument_bytes': int(m.argument_size_in_bytes)}
  except Exception:  # pylint: disable=broad-except
    return {'compiled_bytes': None}


def _peak_bytes(mesh):
  stats = [d.memory_stats() for d in mesh.devices.flat]
  if not stats or stats[0] is None:
    return None
  return max(s.get('peak_bytes_in_use', 0) for s in stats)


def _time(fn, args, iters, carry_state, profile=0):
  """-> (the times of `iters` calls after one warm-up, the last output, the `op_profile` of
  `iters` more calls with its `profile` costliest entries, or None for 0); train steps feed
  their state back."""
  out = fn(*args)
  jax.block_until_ready(out)
  times = []
  for _ in range(iters):
    if carry_state:
      args = (out[0],) + tuple(args[1:])
    t0 = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  if not profile:
    return times, out, None
  if carry_state:  # the state passed in was donated: profile from the last one
    args = (out[0],) + tuple(args[1:])
  return times, out, op_profile.profile(fn, args, iters, carry_state, profile)


def _images(config, n, seed=0):
  (h, w), c = sizes.image_size(config), config.data.channels
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def bench_train(stage, config, mesh, iters, profile=0):
  # a schedule's length changes the learning rate, not the program: any length times it
  step = training.train_step(stage, config, mesh,
                             training.num_steps(config, stage, config.batch_size))
  # the stage's costliest variant (RcAE's stage 1: its deepest n)
  program = step.program(methods.stage(config, stage).variants(config)[-1])
  params = model_lib.init_all(config, jax.random.PRNGKey(config.seed))
  frozen = parallel.replicate(training.frozen_inputs(stage, params, config), mesh)
  state = parallel.replicate(step.init_state(), mesh)
  batch = parallel.shard_batch(
      batches.host_batch(_images(config, 2 * config.batch_size), config.batch_size, 0, 0), mesh)
  lowered = program.lower(state, frozen, batch)
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  if iters is None:  # compile only
    return compile_s, [], (lowered, compiled), None, layers.count_params(params[step.net]), None
  times, (_, metrics), prof = _time(compiled, (state, frozen, batch), iters, True, profile)
  return compile_s, times, (lowered, compiled), _hash(metrics), layers.count_params(
      params[step.net]), prof


def bench_infer(config, mesh, iters, profile=0):
  params = model_lib.init_all(config, jax.random.PRNGKey(config.seed))
  params = parallel.replicate(params, mesh)
  x = parallel.shard_batch(_images(config, config.batch_size), mesh)
  lowered = inference.compiled(config, mesh).lower(params, x)
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  if iters is None:  # compile only
    return compile_s, [], (lowered, compiled), None, layers.count_params(params), None
  times, out, prof = _time(compiled, (params, x), iters, False, profile)
  return compile_s, times, (lowered, compiled), _hash(out['score']), layers.count_params(
      params), prof


def bench_input(config, mesh, iters):
  images = _images(config, 64)
  gen = batches.prefetch_to_device(images, config.batch_size, 0, 0, iters + 1, mesh)
  jax.block_until_ready(next(gen)[0])
  times = []
  for batch, _ in gen:
    t0 = time.perf_counter()
    jax.block_until_ready(batch)
    times.append(time.perf_counter() - t0)
  t0 = time.perf_counter()
  for s in range(iters):
    jax.block_until_ready(parallel.shard_batch(
        batches.host_batch(images, config.batch_size, 0, s), mesh))
  unprefetched = (time.perf_counter() - t0) / iters
  return times, unprefetched


def _n_tiles(config):
  if not config.infer.tile:
    return 1
  (h, w), (th, tw) = sizes.image_size(config), sizes.as_pair(config.infer.tile)
  o = config.infer.overlap
  return len(inference.tile_starts(h, th, o)) * len(inference.tile_starts(w, tw, o))


def run_one(name, config, mesh, iters, peak, measured=None, profile=0):
  row = {'name': name, 'size': list(sizes.image_size(config)), 'batch': config.batch_size,
         'method': config_lib.method(config), 'recursion': config.model.recursion,
         'depth': getattr(model_lib.from_config(config), 'depth', None),
         'dtype': config.model.dtype, 'devices': int(mesh.devices.size),
         'tile': list(sizes.as_pair(config.infer.tile)) if config.infer.tile else None,
         'overlap': config.infer.overlap if config.infer.tile else None}
  if name == 'input':
    times, unprefetched = bench_input(config, mesh, iters)
    row.update(compile_s=0.0, flops=0.0, output_hash=None, params=0,
               wait_s_unprefetched=unprefetched)
  else:
    fn = bench_infer if name == 'infer' else functools.partial(bench_train, int(name[5:]))
    compile_s, times, (lowered, compiled), out_hash, n_params, prof = fn(config, mesh, iters,
                                                                         profile=profile)
    if prof:
      row['profile'] = prof
    flops, source, nbytes = _cost((lowered, compiled))
    n_tiles = _n_tiles(config) if name == 'infer' else 1
    if n_tiles > 1:  # XLA counts a scan's body once: the tiles' program runs n_tiles times
      flops, nbytes = flops * n_tiles, nbytes * n_tiles
      row.update(tiles=n_tiles, cost_note='FLOPs and bytes: one tile x the number of tiles')
    row.update(compile_s=compile_s, flops=flops, flops_source=source, bytes_accessed=nbytes,
               output_hash=out_hash,
               params=n_params, **_memory(compiled))
  if not times:  # compile only: what the program needs, not how fast it runs
    row.update(step_s_median=None, images_per_s=None, flops_per_s=None, peak_fraction=None,
               compile_only=True)
    return row
  med = statistics.median(times)
  row.update(step_s_median=med, step_s_min=min(times), step_s_max=max(times),
             iters=len(times), images_per_s=config.batch_size / med)
  row['flops_per_s'] = row['flops'] / med if row['flops'] == row['flops'] else None
  if row.get('flops_source') == 'compiled' and jax.default_backend() == 'gpu':
    row['flops_note'] = 'compiled-module count: excludes cuDNN convolutions (undercount)'
    row['flops_per_s'] = None  # a fraction of peak from an undercount would mislead
  total_peak = peak * row['devices'] if peak else None
  row['peak_fraction'] = (row['flops_per_s'] / total_peak
                          if total_peak and row['flops_per_s'] else None)
  if measured:  # CPU: fractions of what this machine's matmul and copy reached in this run
    # virtual CPU devices share the same cores: the peak is the machine's, not per device
    matmul = measured[f'{config.model.dtype}_flops_per_s']
    row['peak_fraction_measured'] = row['flops_per_s'] / matmul if row['flops_per_s'] else None
    nbytes = row.get('bytes_accessed')
    row['bandwidth_fraction_measured'] = (nbytes / med / measured['copy_bytes_per_s']
                                          if nbytes and nbytes == nbytes else None)
  row['peak_bytes_in_use'] = _peak_bytes(mesh)
  return row


def main(args):
  try:
    bench_sizes = [sizes.parse(s) for s in args.size or ()]
  except ValueError as e:
    raise config_lib.ConfigError(f'bench --size: {e}') from None
  # at the benched size before --set: keys checked against the image size (infer.tile,
  # stageK.crop) are checked against the size they will run at
  overrides = [f'data.size={bench_sizes[0]}'] if bench_sizes else []
  overrides += list(args.set)
  if args.batch:
    overrides.append(f'batch_size={args.batch}')
  base = config_lib.load_config(args.config, overrides)
  stages = model_lib.stage_nets(base)
  what = ([w.strip() for w in args.what.split(',') if w.strip()] if args.what else
          [f'train{s}' for s in stages] + ['infer'])
  known = STEPS + tuple(f'train{s}' for s in stages if f'train{s}' not in STEPS)
  unknown = [w for w in what if w not in known]
  if unknown:
    raise config_lib.ConfigError(f'bench --what: unknown step(s) {unknown}; known: {list(known)}')
  missing = [w for w in what if w.startswith('train') and int(w[5:]) not in stages]
  if missing:
    raise config_lib.ConfigError(f'bench --what {",".join(missing)}: method='
                                 f'{config_lib.method(base)} trains stages {sorted(stages)} only')
  if args.compile_only:
    what = [w for w in what if w != 'input']  # the input pipeline has no program
  n_all = len(jax.devices())
  counts = sorted(set(args.devices or [1, n_all]))
  bad = [n for n in counts if not 1 <= n <= n_all]
  if bad:
    raise config_lib.ConfigError(f'bench --devices {bad}: this machine has {n_all} device(s)')
  kind = jax.devices()[0].device_kind
  measured = None
  if jax.default_backend() == 'cpu' and not args.compile_only and args.peak_matmul:
    measured = measure_peak(jax.devices()[0], args.peak_matmul, args.peak_copy_mib)
    cpu = host.cpu()
    print(f"this CPU ({cpu['model'] or 'model unknown'}; {cpu['usable_cpus']} cores usable; "
          f"{', '.join(cpu['isa']) or 'no listed vector features'}), measured: matmul "
          f"{measured['float32_flops_per_s'] / 1e9:.1f} GFLOP/s "
          f"float32, {measured['bfloat16_flops_per_s'] / 1e9:.1f} bfloat16; copy "
          f"{measured['copy_bytes_per_s'] / 1e9:.1f} GB/s", flush=True)
  rows = []
  bench_sizes = bench_sizes or [sizes.as_pair(base.data.size)]
  for res in bench_sizes:
    for rec, dtype in itertools.product(args.recursion or [base.model.recursion],
                                        args.dtype or [base.model.dtype]):
      config = config_lib.apply_overrides(
          base, [f'data.size={res}', f'model.recursion={rec}',
                 f'model.dtype={dtype}'])
      peak = (args.peak_tflops * 1e12 if args.peak_tflops else
              PEAKS.get(kind, {}).get(config.model.dtype))
      for n_dev in counts:
        mesh = parallel.make_mesh(jax.devices()[:n_dev])
        parallel.local_batch_size(config.batch_size, mesh)
        for name in what:
          row = run_one(name, config, mesh, None if args.compile_only else args.iters, peak,
                        measured, 0 if args.compile_only else args.profile)
          rows.append(row)
          tile = f' tiles {sizes.name(config.infer.tile)}' if config.infer.tile else ''
          if args.compile_only:
            print(f"{name:7s} {sizes.label(res) + tile:>9s} {rec:7s} {dtype:8s} {n_dev}dev  compile "
                  f"{row['compile_s']:.2f}s  program {(row['compiled_bytes'] or 0) / 2**30:.2f} "
                  "GiB", flush=True)
            continue
          print(f"{name:7s} {sizes.label(res) + tile:>9s} {rec:7s} {dtype:8s} {n_dev}dev  "
                f"compile {row['compile_s']:.2f}s  step {row['step_s_median'] * 1e3:9.2f} ms  "
                f"{row['images_per_s']:9.1f} img/s"
                + (f"  {row['peak_fraction'] * 100:.1f}% of peak" if row['peak_fraction'] else '')
                + (f"  {row['peak_fraction_measured'] * 100:.1f}% of the measured matmul, "
                   f"{row['bandwidth_fraction_measured'] * 100:.1f}% of the copy bandwidth"
                   if row.get('peak_fraction_measured') and
                   row.get('bandwidth_fraction_measured') else ''), flush=True)
          if row.get('profile'):
            print(op_profile.format_profile(row['profile'], row['step_s_median'] * 1e3),
                  flush=True)
  env = runinfo.environment(parallel.make_mesh())
  env.update(device_kind=kind, peak_flops_per_device=peak, measured_peak=measured,
             config=base.to_dict(),
             command='python -m rcae_jax bench ' + ' '.join(_argv(args)))
  files.write_json(args.out, {'env': env, 'steps': rows})
  print(f'wrote {args.out}')


def _argv(args):
  import sys  # pylint: disable=g-import-not-at-top
  return sys.argv[2:] if len(sys.argv) > 2 else [f'--out {args.out}']
