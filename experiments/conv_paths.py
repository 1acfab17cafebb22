"""Why the training steps sit far below the CPU's matmul peak: the convolution paths, measured.

XLA:CPU reaches its matmul peak (and, on AMX cores, a bf16 matmul several times faster)
only in `dot`. The networks are small convolutions (16-64 channels, 3x3 and 4x4 strided at
16-64 px). For each shape of `mtd.py:cpu` this times, forward + both gradients, in float32
and bfloat16:

  conv      lax.conv_general_dilated, what the networks run
  im2col    the same convolution as one dot over the k*k shifted slices (the patch matrix
            is built and its gradient scattered back: the memory traffic a GEMM path pays)
  dot_only  the dot of im2col alone on a ready patch matrix: the ceiling of any GEMM path

and reports GFLOP/s (2*B*H'*W'*k*k*C_in*C_out per pass, x3 for forward + two gradients)
and each one's fraction of the measured n^3 matmul of the same dtype (`bench.measure_peak`).
Both paths give the same numbers (max relative difference printed).

  python experiments/conv_paths.py --out runs/conv_paths

Prints a table and writes <out>/conv_paths.json (atomically) when --out is given.
"""
import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from rcae_jax import bench, files, runinfo, tables  # pylint: disable=wrong-import-position

# (channels in, channels out, kernel, stride, side) of mtd.py:cpu's networks (C = 16, 64²):
# the encoder's strided 4x4 convs and the 3x3 convs at each scale
SHAPES = ((16, 16, 3, 1, 64), (16, 32, 4, 2, 64), (32, 32, 3, 1, 32), (32, 64, 4, 2, 32),
          (64, 64, 3, 1, 16), (48, 16, 3, 1, 64))
DN = ('NHWC', 'HWIO', 'NHWC')


def _pads(k, s):
  return [((k - 1) // 2, k // 2)] * 2 if s == 1 else [((k - s) // 2, (k - s + 1) // 2)] * 2


def patches(x, k, s, pads):
  """(B, H', W', k*k*C): the k*k shifted (strided) slices of the padded input, stacked."""
  x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  b, h, w, c = x.shape
  ho, wo = (h - k) // s + 1, (w - k) // s + 1
  return jnp.concatenate([
      jax.lax.slice(x, (0, i, j, 0), (b, i + (ho - 1) * s + 1, j + (wo - 1) * s + 1, c),
                    (1, s, s, 1)) for i in range(k) for j in range(k)], axis=-1)


def measure(cin, cout, k, s, side, dtype, batch, iters):
  """-> one row: the three paths' median times and GFLOP/s for a (batch, side, side, cin)
  input and a k x k, stride s kernel to cout channels, and how far im2col's gradients are
  from the convolution's (max relative difference)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((batch, side, side, cin)), dtype)
  w = jnp.asarray(rng.standard_normal((k, k, cin, cout)) * 0.1, dtype)
  pads = _pads(k, s)
  loss = lambda y: jnp.sum(jnp.square(y.astype(jnp.float32)))
  conv = lambda w, x: loss(jax.lax.conv_general_dilated(x, w, (s, s), pads, dimension_numbers=DN))
  im2col = lambda w, x: loss(jnp.einsum('bhwk,ko->bhwo', patches(x, k, s, pads),
                                        w.reshape(-1, cout)))
  p = patches(x, k, s, pads)
  dot_only = lambda w, p: loss(jnp.einsum('bhwk,ko->bhwo', p, w.reshape(-1, cout)))
  grads = {name: jax.jit(jax.grad(f, argnums=(0, 1)))
           for name, f in (('conv', conv), ('im2col', im2col), ('dot_only', dot_only))}
  ref, alt = grads['conv'](w, x), grads['im2col'](w, x)
  rel = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))) /
                  float(jnp.max(jnp.abs(a.astype(jnp.float32))))) for a, b in zip(ref, alt))
  flops = 3 * 2 * batch * p.shape[1] * p.shape[2] * k * k * cin * cout
  row = {'shape': f'{cin}->{cout} {k}x{k}/{s} at {side}²', 'dtype': dtype, 'batch': batch,
         'gflop': flops / 1e9, 'max_rel_diff': rel}
  for name, g in grads.items():
    t = bench.median_seconds(g, (w, p if name == 'dot_only' else x), iters)
    row[f'{name}_ms'], row[f'{name}_gflops'] = 1e3 * t, flops / t / 1e9
  return row


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  ap.add_argument('--batch', type=int, default=16)
  ap.add_argument('--iters', type=int, default=5)
  ap.add_argument('--out', default=None)
  args = ap.parse_args(argv)
  peak = bench.measure_peak(jax.devices()[0])
  rows = []
  for dtype in ('float32', 'bfloat16'):
    for shape in SHAPES:
      row = measure(*shape, dtype, args.batch, args.iters)
      top = peak[f'{dtype}_flops_per_s'] / 1e9
      row.update({f'{n}_of_peak': row[f'{n}_gflops'] / top for n in ('conv', 'im2col', 'dot_only')})
      rows.append(row)
      print(f"{row['shape']:>22} {dtype:>8}: conv {row['conv_ms']:7.1f} ms "
            f"({100 * row['conv_of_peak']:4.1f} % of peak), im2col {row['im2col_ms']:7.1f} ms, "
            f"dot alone {row['dot_only_ms']:6.1f} ms ({100 * row['dot_only_of_peak']:4.1f} %)",
            flush=True)
  print(f"\nmeasured peak: matmul {peak['float32_flops_per_s'] / 1e9:.0f} GFLOP/s float32, "
        f"{peak['bfloat16_flops_per_s'] / 1e9:.0f} bfloat16\n")
  print(tables.markdown(
      ['convolution', 'dtype', 'conv ms', 'conv % of peak', 'im2col ms', 'dot alone ms',
       'dot alone % of peak', 'im2col / conv time'],
      [[r['shape'], r['dtype'], f"{r['conv_ms']:.1f}", f"{100 * r['conv_of_peak']:.1f}",
        f"{r['im2col_ms']:.1f}", f"{r['dot_only_ms']:.1f}", f"{100 * r['dot_only_of_peak']:.1f}",
        f"{r['im2col_ms'] / r['conv_ms']:.2f}"] for r in rows]))
  if args.out:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files.write_json(out / 'conv_paths.json', {'peak': peak, 'rows': rows,
                                               'env': runinfo.environment()})
    print(f'wrote {out / "conv_paths.json"}')


if __name__ == '__main__':
  main()
