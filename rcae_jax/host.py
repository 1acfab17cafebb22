"""The CPU a process runs on: its model, its cores and its instruction-set features.

Read from /proc/cpuinfo with no JAX import, so the compilation cache can name its folder
by it before JAX starts, and every env.json and bench JSON records it.
"""
import os
import pathlib

# The instruction-set features that decide a CPU step's speed here: two 2-core machines, one
# with AVX-512 and AMX and one with AVX2 only, ran the same steps 1.9-2.4x apart
# (docs/benchmarks.md), so a time is only read next to these.
ISA = ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16', 'asimd', 'sve')


def cpu(cpuinfo='/proc/cpuinfo'):
  """{'model', 'logical_cpus', 'usable_cpus', 'flags', 'isa'} of this host's CPU: the model
  name and sorted feature flags of cpuinfo's first processor (None and [] where it is not
  readable), the cores this process may use, and which of ISA it has."""
  model, flags = None, []
  try:
    lines = pathlib.Path(cpuinfo).read_text().splitlines()
  except OSError:
    lines = []
  for line in lines:
    key, _, value = line.partition(':')
    key = key.strip()
    if model is None and key in ('model name', 'Model name', 'Hardware'):
      model = value.strip()
    if not flags and key in ('flags', 'Features'):
      flags = sorted(value.split())
  usable = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
            else os.cpu_count())
  return {'model': model, 'logical_cpus': os.cpu_count(), 'usable_cpus': usable,
          'flags': flags, 'isa': [f for f in ISA if f in flags]}
