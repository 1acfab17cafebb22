"""The training programs' XLA options: on CPU only, the user's XLA_FLAGS first, and a jaxlib
that refuses them falls back to XLA's defaults."""
import jax
import numpy as np

from rcae_jax import xla_options


def test_cpu_training_programs_keep_ynnpack_off_convolutions(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  assert xla_options.training('cpu') == xla_options.CPU_TRAINING
  assert xla_options.training('gpu') == {} and xla_options.training('tpu') == {}
  monkeypatch.setenv('XLA_FLAGS', f'--{xla_options.YNN}=')  # the user's choice wins
  assert xla_options.training('cpu') == {}


def test_options_this_jaxlib_refuses_are_dropped(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.setattr(xla_options, 'CPU_TRAINING',
                      {xla_options.YNN: 'LIBRARY_FUSION_TYPE_NO_SUCH_THING'})
  assert xla_options.training('cpu') == {}


def test_the_options_compile_the_same_function():
  f = lambda x, w: jax.nn.relu(jax.lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))).sum((1, 2))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 16, 16, 8)).astype(np.float32)
  w = rng.normal(size=(3, 3, 8, 8)).astype(np.float32)
  got = jax.jit(f, compiler_options=xla_options.CPU_TRAINING)(x, w)
  np.testing.assert_allclose(got, jax.jit(f)(x, w), rtol=1e-5)
