"""Pseudo-anomalies: every shape x filler is confined to its mask; the validation set."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from rcae_jax import anomalies
from rcae_jax import config as config_lib
from rcae_jax.evaluators import validation


@pytest.fixture(scope='module')
def images():
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3))
  return x, anomalies.texture_bank(32, 3, per_source=1)


@pytest.mark.parametrize('shape,filler', list(itertools.product(anomalies.SHAPES, anomalies.FILLERS)))
def test_every_shape_and_filler_stays_inside_its_mask(images, shape, filler):
  (x, other), bank = images[0], images[1]
  for seed in range(3):
    out, mask = anomalies.synthesize(jax.random.PRNGKey(seed), x, other, bank, shapes=(shape,),
                                     fillers=(filler,), p_clean=0.0)
    out, mask = np.asarray(out), np.asarray(mask)
    assert mask.shape == (32, 32, 1) and mask.min() >= 0 and mask.max() <= 1
    assert (mask > 0.5).sum() >= 2, (shape, filler, seed)
    np.testing.assert_allclose(out[mask[..., 0] == 0], np.asarray(x)[mask[..., 0] == 0])
    assert out.min() >= 0 and out.max() <= 1


def test_regions_are_larger_than_scratches(images):
  (x, other), bank = images[0], images[1]
  area = lambda s: np.mean([
      float((anomalies.synthesize(jax.random.PRNGKey(k), x, other, bank, shapes=(s,),
                                  p_clean=0.0)[1] > 0.5).mean()) for k in range(8)])
  assert area('region') > 3 * area('line')


def test_validation_set_is_fixed_and_half_anomalous(tmp_path):
  config = tiny_config(tmp_path, 'data.resolution=32')
  val = (np.random.default_rng(0).random((6, 32, 32, 3)) * 255).astype(np.uint8)
  images, masks = validation.validation_set(config, val)
  again, _ = validation.validation_set(config, val)
  np.testing.assert_array_equal(images, again)
  assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(images[:6], val)
  assert not masks[:6].any() and all(m.any() for m in masks[6:])
  small, _ = validation.validation_set(
      config_lib.apply_overrides(config, ['eval_batch_size=4']), val)  # batches of 4, 4, 4
  np.testing.assert_array_equal(images, small)


def test_drawing_one_at_a_time_gives_the_same_examples_in_less_memory(tmp_path):
  """anomaly.batching=map computes only each example's drawn shape and filler: the same
  pseudo-anomalies as vmap (which computes every branch for every example), in a fraction
  of the compiled program's temporary memory."""
  x = jax.random.uniform(jax.random.PRNGKey(1), (8, 64, 64, 3))
  bank = anomalies.texture_bank(64, 3, per_source=1)
  out, temp = {}, {}
  for mode in ('vmap', 'map'):
    config = tiny_config(tmp_path, 'data.resolution=64', f'anomaly.batching={mode}',
                         "anomaly.shapes=('patch','blob','line','curve','region')")
    fn = jax.jit(lambda k, im, i, t, c=config: anomalies.synthesize_batch(k, im, i, t, c))
    compiled = fn.lower(jax.random.PRNGKey(3), x, jnp.arange(8), bank).compile()
    out[mode] = compiled(jax.random.PRNGKey(3), x, jnp.arange(8), bank)
    temp[mode] = compiled.memory_analysis().temp_size_in_bytes
  for a, b in zip(out['vmap'], out['map']):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  assert temp['map'] < temp['vmap'] / 3, temp
  assert not anomalies.one_at_a_time(tiny_config(tmp_path, 'data.resolution=256'))
  assert anomalies.one_at_a_time(tiny_config(tmp_path, 'data.resolution=512'))
