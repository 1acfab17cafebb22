"""XLA compiler options of the training programs, per backend.

On CPU, XLA hands single convolutions to the YNNPACK library by default
(`xla_cpu_experimental_ynn_fusion_type` holds INDIVIDUAL_CONVOLUTION). On the 2-core Xeon
the CRD's training step is 8 % faster with XLA's own convolutions, stage 1's a tie, and the
parameters after stage 3's steps are bit-identical (docs/benchmarks.md, issue 35), so the
training programs are compiled with YNNPACK kept for reductions and single matmuls only.

Passed per program (`jax.jit(..., compiler_options=...)`), not through `XLA_FLAGS`: a
process whose backend is already running (the Python API in a notebook) compiles the same
training programs as the CLI. Inference keeps XLA's defaults, so no score depends on how a
model was trained or where it is run from. A user's own `XLA_FLAGS` setting of the option
wins, and a jaxlib that does not know these values gets XLA's defaults.
"""
import functools
import os

import jax
import numpy as np

YNN = 'xla_cpu_experimental_ynn_fusion_type'
CPU_TRAINING = {YNN: 'LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}


def training(platform):
  """compiler_options for a training program on devices of `platform` ('cpu', 'gpu',
  'tpu'): {} but on CPU."""
  if platform != 'cpu' or YNN in os.environ.get('XLA_FLAGS', ''):
    return {}
  return dict(CPU_TRAINING) if _accepted(tuple(sorted(CPU_TRAINING.items()))) else {}


@functools.cache
def _accepted(options):
  """Whether this jaxlib's XLA compiles with `options` (an unknown value is an error)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(
        np.zeros(2, np.float32)).compile()
  except Exception:  # pylint: disable=broad-except
    return False
  return True
