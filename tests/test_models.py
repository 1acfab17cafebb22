"""Shapes, weight sharing, scan == loop, batched sequence == per-depth, Sobel/Gaussian refs."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from conftest import tiny_config
from rcae_jax import config as config_lib
from rcae_jax import discrepancy, inference, losses, ops
from rcae_jax import model as model_lib
from rcae_jax.models import crd, layers


@pytest.fixture(scope='module')
def x():
  return jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))


@pytest.mark.parametrize('recursion', ['depth', 'iterate'])
def test_shapes(tmp_path, x, recursion):
  config = tiny_config(tmp_path, f'model.recursion={recursion}')
  params = model_lib.init_all(config, jax.random.PRNGKey(0))
  out = jax.jit(inference.make_inference(config, with_sequences=True))(params, x)
  n = config.model.depth
  chex.assert_shape(out['recon'], (n, 2, 16, 16, 3))
  chex.assert_shape(out['enhanced'], (n, 2, 16, 16, 3))
  chex.assert_shape(out['map'], (2, 16, 16))
  chex.assert_shape(out['score'], (2,))
  assert np.all((out['recon'] >= 0) & (out['recon'] <= 1))


def test_batched_depth_sequence_equals_each_depth(tmp_path, x):
  config = tiny_config(tmp_path)
  model = model_lib.from_config(config)
  p = model.init('rcae', jax.random.PRNGKey(0))
  seq = jax.jit(model.sequence)(p, x)
  at_depth = jax.jit(model.at_depth, static_argnums=2)
  for n in range(1, config.model.depth + 1):
    np.testing.assert_allclose(seq[n - 1], at_depth(p, x, n), atol=1e-5)


def test_remat_changes_memory_not_numbers(tmp_path):
  """model.remat: the same parameter tree, outputs and gradients; a smaller backward (at
  32²: at 16² the two programs' temporaries are within a few hundred bytes)."""
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3))
  models = {r: model_lib.from_config(tiny_config(tmp_path, f'model.remat={r}'))
            for r in (False, True)}
  p = models[False].init('rcae', jax.random.PRNGKey(0))
  chex.assert_trees_all_equal_shapes(p, models[True].init('rcae', jax.random.PRNGKey(0)))
  grads, temp = {}, {}
  for r, m in models.items():
    loss = lambda q, m=m: jnp.mean((m.at_depth(q, x, 3) - x) ** 2)
    fn = jax.jit(jax.value_and_grad(loss)).lower(p).compile()  # compiled once, run and measured
    grads[r] = fn(p)
    temp[r] = fn.memory_analysis().temp_size_in_bytes
  chex.assert_trees_all_close(grads[False], grads[True], atol=1e-6)
  assert temp[True] < temp[False], temp


def test_iterate_scan_equals_python_loop(tmp_path, x):
  config = tiny_config(tmp_path, 'model.recursion=iterate')
  model = model_lib.from_config(config)
  p = model.init('rcae', jax.random.PRNGKey(0))
  seq = jax.jit(model.sequence)(p, x)
  r = x
  for n in range(config.model.depth):
    r = model.rcae.apply(p, r, method='autoencode')
    np.testing.assert_allclose(seq[n], r, atol=1e-5)
    np.testing.assert_allclose(model.at_depth(p, x, n + 1), r, atol=1e-5)


def _rcae_count(tmp_path, *ov):
  config = tiny_config(tmp_path, 'data.resolution=64', *ov)
  model = model_lib.from_config(config)  # shapes suffice: traced, not compiled
  return layers.count_params(jax.eval_shape(lambda k: model.init('rcae', k), jax.random.PRNGKey(0)))


def test_shared_params_independent_of_depth_unshared_grow(tmp_path):
  shared = [_rcae_count(tmp_path, f'model.depth={n}') for n in (1, 3, 5)]
  unshared = [_rcae_count(tmp_path, f'model.depth={n}', 'model.shared=False') for n in (1, 3, 5)]
  assert shared[0] == shared[1] == shared[2]
  assert unshared[0] == shared[0] and unshared[0] < unshared[1] < unshared[2]


def test_skips_change_the_decoder(tmp_path):
  assert _rcae_count(tmp_path, 'model.skips=False') < _rcae_count(tmp_path)


def test_stepconv_is_a_3d_convolution():
  h = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 8, 8, 5))
  sc = crd.StepConv(6)
  p = sc.init(jax.random.PRNGKey(1), h)
  k2 = p['params']['Conv_0']['kernel']  # (3, 3, 3 * 5, 6)
  k3 = jnp.transpose(k2.reshape(3, 3, 3, 5, 6), (2, 0, 1, 3, 4))  # (t, h, w, c, f)
  conv3 = nn.Conv(6, (3, 3, 3), padding='SAME')
  ref = conv3.apply({'params': {'kernel': k3, 'bias': p['params']['Conv_0']['bias']}}, h)
  np.testing.assert_allclose(sc.apply(p, h), ref, atol=1e-5)


def test_sobel_matches_scipy():
  img = np.random.default_rng(0).random((2, 9, 11, 3)).astype(np.float32)
  got = np.asarray(ops.sobel(jnp.asarray(img)))
  for b in range(2):
    for c in range(3):
      np.testing.assert_allclose(got[b, :, :, c], ndimage.sobel(img[b, :, :, c], 0, mode='nearest'),
                                 atol=1e-5)
      np.testing.assert_allclose(got[b, :, :, 3 + c],
                                 ndimage.sobel(img[b, :, :, c], 1, mode='nearest'), atol=1e-5)


def test_gaussian_blur_matches_scipy():
  img = np.random.default_rng(0).random((1, 40, 40, 1)).astype(np.float32)
  got = np.asarray(ops.gaussian_blur(jnp.asarray(img), 4.0))[0, :, :, 0]
  np.testing.assert_allclose(got, ndimage.gaussian_filter(img[0, :, :, 0], 4.0), atol=1e-5)


def test_reflect_padding_has_no_border_response(tmp_path):
  """A flat image stays flat through every network with reflect padding (no border looks
  like an edge); zero padding makes the borders differ. Same parameters either way.
  Without GroupNorm: normalising a flat feature map divides rounding noise by sqrt(eps)."""
  x = jnp.full((1, 16, 16, 3), 0.4)
  flat = {}
  for padding in ('reflect', 'zeros'):
    config = tiny_config(tmp_path, f'model.padding={padding}', 'score.sigma=0.0',
                         'model.groups=0', 'model.depth=2')
    params = model_lib.init_all(config, jax.random.PRNGKey(0))
    out = jax.jit(inference.make_inference(config, with_sequences=True))(params, x)
    flat[padding] = [float(jnp.ptp(out['recon'], axis=(2, 3)).max()),  # over (h, w)
                     float(jnp.ptp(out['map'], axis=(1, 2)).max())]
    flat[padding + '_tree'] = jax.tree.structure(params)
  assert max(flat['reflect']) < 1e-5, flat
  assert min(flat['zeros']) > 1e-4, flat
  assert flat['reflect_tree'] == flat['zeros_tree']


def test_mean_filter_matches_scipy():
  img = np.random.default_rng(0).random((2, 20, 24, 3)).astype(np.float32)
  got = np.asarray(ops.mean_filter(jnp.asarray(img), 5, repeats=3))
  ref = img
  for _ in range(3):
    ref = ndimage.uniform_filter(ref, size=(1, 5, 5, 1), mode='mirror')
  np.testing.assert_allclose(got, ref, atol=1e-5)


def test_discrepancies_against_references():
  """SSIM against scikit-image's Gaussian-window SSIM (away from the border, where the two
  pad differently); GMS of a known gradient pair; every measure is 0 for a perfect copy."""
  from skimage import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.random((1, 24, 28, 1)).astype(np.float32)
  y = np.clip(0.6 * x + 0.3 + 0.05 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
  ref = sk_metrics.structural_similarity(x[0, ..., 0], y[0, ..., 0], data_range=1.0,
                                         gaussian_weights=True, sigma=1.5, full=True,
                                         use_sample_covariance=False)[1]
  got = 1 - np.asarray(discrepancy.ssim(x, y))[0, ..., 0]
  np.testing.assert_allclose(got[6:-6, 6:-6], ref[6:-6, 6:-6], atol=1e-4)
  ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (16, 1))[None, ..., None]
  # gradient magnitudes m and m/2 everywhere inside: 1 - (2 m²/2 + c)/(m² + m²/4 + c)
  m = float(np.asarray(ops.sobel(jnp.asarray(ramp)))[0, 8, 8, 1]) / 4
  want = 1 - (m * m + 0.0026) / (1.25 * m * m + 0.0026)
  np.testing.assert_allclose(np.asarray(discrepancy.gms(ramp, 0.5 * ramp))[0, 4:-4, 4:-4],
                             want, rtol=1e-4)
  for name in discrepancy.NAMES + ('mse+gms',):
    assert float(jnp.abs(discrepancy.measure(name, x, x)).max()) < 1e-6, name


def test_fae_unet_shapes_and_one_stage(tmp_path, x):
  config = tiny_config(tmp_path, 'method=fae', 'stages=(1,)', 'fae.features=8', 'fae.levels=3',
                       'model.padding=reflect', 'score.smoothing=mean', 'score.image=sum')
  assert model_lib.stage_nets(config) == {1: 'fae'}
  params = model_lib.init_all(config, jax.random.PRNGKey(0))
  out = jax.jit(inference.make_inference(config, with_sequences=True))(params, x)
  chex.assert_shape(out['recon'], (1, 2, 16, 16, 3))
  chex.assert_shape(out['map'], (2, 16, 16))
  assert np.all((out['recon'] >= 0) & (out['recon'] <= 1))
  # dilations 1..8 in a 4x4 bottleneck with reflect padding: defined, finite
  assert np.isfinite(np.asarray(out['score'])).all()


def test_crd_without_the_image_sees_only_the_sequence_and_its_difference(tmp_path):
  """model.crd_image=False: the CRD reads D_n and |D_n - x| only, so an input mirrored about
  D_n (x' = 2 D_n - x, the same difference) gives the same logits, and its first layer has
  27 C f weights fewer (3x3x3 over C channels, f features); with the image they differ."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  enhanced = jax.random.uniform(k1, (2, 1, 8, 8, 3))  # (S, B, H, W, C)
  x = jax.random.uniform(k2, (1, 8, 8, 3))
  mirrored = 2 * enhanced[-1] - x  # |D - x'| = |D - x| for the step both share
  enhanced = jnp.stack([enhanced[-1]] * 2)
  count = {}
  for image in (True, False):
    net = crd.CRD(features=4, diff=True, image=image, arch='small')
    params = jax.jit(net.init)(jax.random.PRNGKey(1), enhanced, x)
    count[image] = sum(np.size(a) for a in jax.tree.leaves(params))
    apply = jax.jit(net.apply)
    a, b = apply(params, enhanced, x), apply(params, enhanced, mirrored)
    if image:
      assert float(jnp.abs(a - b).max()) > 1e-3
    else:
      np.testing.assert_allclose(a, b, atol=1e-6)
  assert count[True] - count[False] == 27 * 3 * 4
  with pytest.raises(config_lib.ConfigError, match='crd_image=False needs model.crd_diff=True'):
    tiny_config(tmp_path, 'model.crd_image=False', 'model.crd_diff=False')


@pytest.mark.parametrize('arch,reaches_corner', [('unet', True), ('small', False)])
def test_what_one_crd_logit_sees(tmp_path, arch, reaches_corner):
  """The U-Net CRD's centre logit depends on the image corners 16 px away at 32²; the
  paper's small CRD sees ~11 px."""
  config = tiny_config(tmp_path, 'data.resolution=32', 'model.depth=2', f'model.crd_arch={arch}')
  model = model_lib.from_config(config)
  params = model.init('crd', jax.random.PRNGKey(0))
  seq = jax.random.uniform(jax.random.PRNGKey(1), (2, 1, 32, 32, 3))
  x = jax.random.uniform(jax.random.PRNGKey(2), (1, 32, 32, 3))
  g = jax.jit(jax.grad(lambda s: model.crd_logits(params, s, x)[0, 16, 16, 0]))(seq)
  reach = np.abs(np.asarray(g)).sum(axis=(0, 1, 4)) > 0
  assert reach[:2, :2].any() == reaches_corner
  assert reach[16, 16]


def test_unet_crd_field_covers_the_image():
  for res in (64, 128, 256, 1024):
    assert crd.receptive_field(crd.auto_levels(res)) >= res, res
  assert crd.auto_levels(64) == 3 and crd.auto_levels(128) == 4


def _bce(z, t):
  return np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))


@pytest.mark.parametrize('loss', ['bce', 'focal'])
def test_crd_losses_against_numpy(tmp_path, loss):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(2, 8, 8, 1)).astype(np.float32) * 2
  t = (rng.random((2, 8, 8, 1)) < 0.1).astype(np.float32)
  config = tiny_config(tmp_path, f'model.crd_loss={loss}', 'model.crd_grad_weight=0.0',
                       'model.crd_pos_weight=0.0', 'model.crd_focal_gamma=2.0')
  got = float(losses.crd_loss(jnp.asarray(t), jnp.asarray(z), config))
  if loss == 'bce':  # balanced: positives weigh (negatives / positives)
    w = 1 + (t.size - t.sum()) / t.sum() * t - t
    want = np.mean(w * _bce(z, t))
  else:
    p = 1 / (1 + np.exp(-z))
    pt = np.where(t == 1, p, 1 - p)
    want = np.mean((1 - pt) ** 2 * -np.log(pt))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  plain = tiny_config(tmp_path, 'model.crd_loss=bce', 'model.crd_grad_weight=0.0',
                      'model.crd_pos_weight=1.0')
  np.testing.assert_allclose(float(losses.crd_loss(jnp.asarray(t), jnp.asarray(z), plain)),
                             np.mean(_bce(z, t)), rtol=1e-5)


@pytest.mark.parametrize('kernel,strides,dilation', [((3, 3), 1, 1), ((4, 4), 2, 1),
                                                     ((3, 3), 2, 1), ((3, 3), 1, 4),
                                                     ((3, 3), 1, 16)])
def test_reflect_conv_equals_flax_reflect(kernel, strides, dilation):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  ref = nn.Conv(5, kernel, (strides, strides), padding='REFLECT', kernel_dilation=dilation)
  p = ref.init(jax.random.PRNGKey(1), x)

  class Ours(nn.Module):
    @nn.compact
    def __call__(self, x):
      return layers.conv(5, kernel, (strides, strides), 'REFLECT', dilation)(x)

  ours = {'params': {'Conv_0': p['params']}}
  np.testing.assert_allclose(Ours().apply(ours, x), ref.apply(p, x), atol=1e-5)
  g = jax.grad(lambda x: Ours().apply(ours, x).sum())(x)
  np.testing.assert_allclose(g, jax.grad(lambda x: ref.apply(p, x).sum())(x), atol=1e-4)


@pytest.mark.parametrize('shape,groups,dtype', [((3, 8, 8, 16), 4, jnp.float32),
                                                ((2, 3, 8, 8, 8), 8, jnp.float32),
                                                ((2, 8, 8, 16), 8, jnp.bfloat16)])
def test_group_norm_equals_flax(shape, groups, dtype):
  """layers.GroupNorm: nn.GroupNorm's function and parameter tree, values and gradients."""
  x = (3 * jax.random.normal(jax.random.PRNGKey(0), shape) + 2).astype(dtype)
  ref = nn.GroupNorm(num_groups=groups, dtype=dtype)
  ours = layers.GroupNorm(num_groups=groups, dtype=dtype)
  p = ref.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(
      jnp.shape, p)
  p = jax.tree.map(lambda a: a + jax.random.normal(jax.random.PRNGKey(2), a.shape), p)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  got, want = ours.apply(p, x), ref.apply(p, x)
  assert got.dtype == want.dtype == dtype
  np.testing.assert_allclose(np.float32(got), np.float32(want), atol=tol, rtol=tol)
  w = jax.random.normal(jax.random.PRNGKey(3), shape)
  loss = lambda m: lambda p, x: (m.apply(p, x).astype(jnp.float32) * w).sum()
  for g, h in zip(jax.tree.leaves(jax.grad(loss(ours), argnums=(0, 1))(p, x)),
                  jax.tree.leaves(jax.grad(loss(ref), argnums=(0, 1))(p, x))):
    np.testing.assert_allclose(np.float32(g), np.float32(h), atol=10 * tol, rtol=10 * tol)
  with pytest.raises(ValueError, match='16 channels do not split into 3 groups'):
    layers.GroupNorm(num_groups=3).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 16)))
