"""Where a compiled program's time goes: XLA's own trace of every operation it ran, each
tied to the model code that emitted it (`bench --profile N`).

`jax.profiler` records each operation (fusion, convolution, copy, ...) the runtime executes
with its HLO name; the compiled module's text gives, for each, the JAX operation it came from
(`op_name` metadata: the module path, e.g. `jvp(CRD)/ConvNormAct_3/Conv_0/...`; for a fusion
that has none, its fused computation's root's, or else the first one named inside it;
operations XLA creates itself, such as the weight gradients of convolutions, carry none
and are summed as '(no source)').
Summed per call, by operation and by layer (the path less its last primitive), this is a
measured profile, where the bench's FLOP and byte counts are estimates: it found, e.g.,
that XLA:CPU recomputed the vmapped pseudo-anomaly drawing inside every fusion that read it
(docs/benchmarks.md).
Loop and branch operations (`while`, `conditional`, `call`) contain the operations they run
and are not counted twice. Operations on parallel threads overlap, so the sum can exceed the
wall time of a call (and intra-op thread-pool work outside any operation is not in it).
"""
import collections
import glob
import gzip
import json
import os
import re
import tempfile

import jax

_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\(')
_COMPUTATION = re.compile(r'^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$')
_CONTAINERS = ('while', 'conditional', 'call')


def sources(hlo_text):
  """{instruction: (opcode, shape, op_name)} of a compiled module's text; an instruction
  without `op_name` (XLA's own fusions) takes its called computation's root's, or else the
  first instruction's there that has one."""
  instr, roots, calls = {}, {}, {}
  computation = None
  for line in hlo_text.splitlines():
    head = _COMPUTATION.match(line)
    if head and ' = ' not in line.split('{')[0]:
      computation = head.group(1)
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, shape, opcode = m.groups()
    op = re.search(r'op_name="([^"]*)"', line)
    instr[name] = (opcode, shape, op.group(1) if op else '')
    called = re.search(r'calls=%?([\w.\-]+)', line)
    if called:
      calls[name] = called.group(1)
    if computation and (line.lstrip().startswith('ROOT ') or not roots.get(computation)):
      roots[computation] = instr[name][2] or roots.get(computation, '')
  return {n: (o, s, src or roots.get(calls.get(n), '')) for n, (o, s, src) in instr.items()}


def layer_of(op_name):
  """'jit(_update)/jvp(CRD)/ConvNormAct_3/Conv_0/conv_general_dilated' ->
  'jvp(CRD)/ConvNormAct_3/Conv_0': the module path without the program and the primitive."""
  parts = [p for p in op_name.split('/') if p]
  if parts and parts[0].startswith('jit('):
    parts = parts[1:]
  return '/'.join(parts[:-1]) or (parts[0] if parts else '(no source)')


def _events(trace_dir):
  paths = glob.glob(os.path.join(trace_dir, '**', 'perfetto_trace.json.gz'), recursive=True)
  if not paths:
    raise RuntimeError(f'jax.profiler wrote no perfetto_trace.json.gz under {trace_dir}')
  with gzip.open(paths[0]) as f:
    return json.load(f)['traceEvents']


def profile(compiled, args, calls=3, carry_state=False, top=15):
  """Runs `compiled(*args)` `calls` times under the profiler (train steps feed their state
  back, as `bench` does) -> {'calls', 'ops_ms', 'ops': [...], 'layers': [...]}: per call,
  the milliseconds of the `top` costliest operations and layers."""
  table = sources(compiled.as_text())
  with tempfile.TemporaryDirectory(prefix='rcae_profile_') as tmp:
    jax.profiler.start_trace(tmp, create_perfetto_trace=True)
    try:
      out = None
      for _ in range(calls):
        out = compiled(*args)
        jax.block_until_ready(out)
        if carry_state:
          args = (out[0],) + tuple(args[1:])
    finally:
      jax.profiler.stop_trace()
    events = _events(tmp)
  per_op, count = collections.defaultdict(float), collections.Counter()
  for e in events:
    name = (e.get('args') or {}).get('hlo_op')
    if e.get('ph') != 'X' or name not in table or table[name][0] in _CONTAINERS:
      continue
    per_op[name] += e['dur'] / 1e3 / calls
    count[name] += 1
  if not per_op:
    raise RuntimeError('the profiler recorded no operation of the compiled program')
  per_layer = collections.defaultdict(float)
  for name, ms in per_op.items():
    per_layer[layer_of(table[name][2])] += ms
  ops = [{'op': n, 'opcode': table[n][0], 'shape': table[n][1], 'source': table[n][2],
          'ms': ms, 'runs': count[n] / calls}
         for n, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:top]]
  layers = [{'layer': k, 'ms': ms} for k, ms in
            sorted(per_layer.items(), key=lambda kv: -kv[1])[:top]]
  return {'calls': calls, 'ops_ms': sum(per_op.values()), 'ops': ops, 'layers': layers}


def format_profile(prof, step_ms=None):
  """A few printable lines: the costliest layers and operations, ms per call and share."""
  total = prof['ops_ms']
  lines = [f"  operations: {total:.1f} ms per call" +
           (f' (the call: {step_ms:.1f} ms)' if step_ms else '')]
  for row in prof['layers']:
    lines.append(f"    {row['ms']:8.2f} ms {100 * row['ms'] / total:5.1f}%  {row['layer']}")
  lines.append('  costliest operations:')
  for row in prof['ops']:
    lines.append(f"    {row['ms']:8.2f} ms  {row['op']} {row['shape']}  {layer_of(row['source'])}")
  return '\n'.join(lines)
