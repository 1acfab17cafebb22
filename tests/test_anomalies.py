"""Pseudo-anomalies: every shape x filler is confined to its mask; the validation set."""
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


# every shape (with a flat colour), every filler (in a patch)
_PAIRS = ([(s, 'color') for s in anomalies.SHAPES] +
          [('patch', f) for f in anomalies.FILLERS if f != 'color'])


@pytest.mark.parametrize('shape,filler', _PAIRS)
def test_every_shape_and_filler_stays_inside_its_mask(images, shape, filler):
  (x, other), bank = images[0], images[1]
  for seed in range(3):
    out, mask = anomalies.synthesize(jax.random.PRNGKey(seed), x, other, bank, shapes=(shape,),
                                     fillers=(filler,), p_clean=0.0, edge=0.5 * (seed == 1))
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
  # 16²: the shared tiny run's size, whose validation compiles the same planting program
  config = tiny_config(tmp_path)
  val = (np.random.default_rng(0).random((11, 16, 16, 3)) * 255).astype(np.uint8)
  images, masks = validation.validation_set(config, val)
  again, _ = validation.validation_set(config, val)
  np.testing.assert_array_equal(images, again)
  assert images.shape == (22, 16, 16, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(images[:11], val)
  assert not masks[:11].any() and all(m.any() for m in masks[11:])
  # batches of 4, 4, 3 (planted in chunks of 4 and of 3 padded to PLANT_CHUNK = 8), against
  # one batch of 11 (chunks of 8 and 3)
  small, _ = validation.validation_set(
      config_lib.apply_overrides(config, ['eval_batch_size=4']), val)
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
    fn = jax.jit(lambda k, im, i, t, c=config: anomalies.synthesize_batch(k, im, i, t, c, 'anomaly'))
    compiled = fn.lower(jax.random.PRNGKey(3), x, jnp.arange(8), bank).compile()
    out[mode] = compiled(jax.random.PRNGKey(3), x, jnp.arange(8), bank)
    temp[mode] = compiled.memory_analysis().temp_size_in_bytes
  for a, b in zip(out['vmap'], out['map']):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  assert temp['map'] < temp['vmap'] / 3, temp
  auto = lambda size, backend: anomalies.one_at_a_time(
      tiny_config(tmp_path, f'data.resolution={size}'), backend=backend)
  assert not auto(256, 'gpu') and auto(512, 'gpu') and auto(16, 'cpu')
  assert not anomalies.one_at_a_time(tiny_config(tmp_path, 'anomaly.batching=vmap'),
                                     backend='cpu')


def test_perlin_noise_vanishes_on_its_lattice():
  """Gradient noise is zero at every lattice point (the offsets vanish there) and not
  elsewhere: 4 cells across 32 px put lattice points every 8 px."""
  noise = np.asarray(anomalies.perlin(jax.random.PRNGKey(0), 32, 32, jnp.array([4.0, 4.0])))
  np.testing.assert_allclose(noise[::8, ::8], 0.0, atol=1e-6)
  assert np.abs(noise[4::8, 4::8]).mean() > 0.05 and np.abs(noise).max() < 1.0


@pytest.mark.parametrize('shape', ['patch', 'curve', 'line', 'crack'])
def test_edge_moves_shapes_onto_a_border(images, shape):
  (x, other), bank = images[0], images[1]
  def touches(edge):
    out = []
    for k in range(12):
      m = np.asarray(anomalies.synthesize(jax.random.PRNGKey(k), x, other, bank, shapes=(shape,),
                                          fillers=('color',), p_clean=0.0, max_size=0.2,
                                          edge=edge)[1])[..., 0] > 0.5
      out.append(m[:2].any() or m[-2:].any() or m[:, :2].any() or m[:, -2:].any())
    return np.mean(out)
  on, off = touches(1.0), touches(0.0)
  assert on >= 0.9 and on >= off + 0.25, (on, off)


def test_invisible_pastes_are_not_labelled(images):
  """A copy of a flat image changes nothing: labelled with visible=0, not with visible>0;
  a flat colour far from the image keeps its full label."""
  bank = images[1]
  flat = jnp.full((32, 32, 3), 0.5)
  kw = dict(shapes=('patch',), p_clean=0.0, min_opacity=1.0)
  _, m0 = anomalies.synthesize(jax.random.PRNGKey(0), flat, flat, bank, fillers=('copy',), **kw)
  _, m1 = anomalies.synthesize(jax.random.PRNGKey(0), flat, flat, bank, fillers=('copy',),
                               visible=0.08, **kw)
  assert float(m0.max()) == 1.0 and float(m1.max()) == 0.0
  dark = jnp.zeros((32, 32, 3))
  _, m2 = anomalies.synthesize(jax.random.PRNGKey(0), dark + 0.9, dark, bank,
                               fillers=('other',), visible=0.08, **kw)
  _, m3 = anomalies.synthesize(jax.random.PRNGKey(0), dark + 0.9, dark, bank,
                               fillers=('other',), **kw)
  np.testing.assert_allclose(np.asarray(m2)[np.asarray(m3) == 1], 1.0)


def test_cracks_are_thin(images):
  (x, other), bank = images[0], images[1]
  for k in range(4):
    m = np.asarray(anomalies.synthesize(jax.random.PRNGKey(k), x, other, bank, shapes=('crack',),
                                        fillers=('color',), p_clean=0.0)[1])[..., 0] > 0.5
    # the mask's area against its extent: a filled shape would have area ~ extent²
    ys, xs = np.nonzero(m)
    extent = max(np.ptp(ys), np.ptp(xs)) + 1
    assert m.sum() <= 2.5 * extent, (k, m.sum(), extent)


def test_texture_bank_with_procedural_textures():
  bank = anomalies.texture_bank(32, 1, per_source=1, procedural=6)
  assert bank.shape == (8 + 6, 32, 32, 1) and bank.dtype == np.float32
  assert bank.min() >= 0 and bank.max() <= 1
  proc = bank[8:, ..., 0]
  assert all(p.std() > 0.02 for p in proc)  # patterned, not flat
  again = anomalies.texture_bank((32, 32), 1, per_source=1, procedural=6)
  assert again is bank and not bank.flags.writeable  # cached: one bank per run, read-only
  anomalies._texture_bank.cache_clear()  # pylint: disable=protected-access
  np.testing.assert_array_equal(bank, anomalies.texture_bank(32, 1, per_source=1, procedural=6))


def test_the_crd_draws_from_crd_anomaly_without_its_holdout(tmp_path):
  config = tiny_config(tmp_path, "crd_anomaly.shapes=('patch','crack')",
                       "crd_anomaly.holdout=('crack',)", "anomaly.shapes=('blob',)")
  assert anomalies.generator(config, 'crd_anomaly')['shapes'] == ('patch',)
  assert anomalies.generator(config, 'anomaly')['shapes'] == ('blob',)
  assert anomalies.generator(config, 'crd_anomaly')['fillers'] == tuple(config.crd_anomaly.fillers)
  val = (np.random.default_rng(0).random((4, 32, 32, 3)) * 255).astype(np.uint8)
  config = config_lib.apply_overrides(config, ['data.resolution=32'])
  only, masks = validation.validation_set(config, val, families=('crack',))
  every, _ = validation.validation_set(config, val)
  assert not np.array_equal(only[4:], every[4:])
  for m in masks[4:]:  # thin: a crack, not a patch
    ys, xs = np.nonzero(m)
    assert len(ys) == 0 or m.sum() <= 2.5 * (max(np.ptp(ys), np.ptp(xs)) + 1)
