"""Image sizes: (h, w) images, the old data.resolution, training crops, tiled inference."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from rcae_jax import api, augment, inference, metrics, ops, sizes, training
from rcae_jax import config as config_lib
from rcae_jax import model as model_lib


def test_sizes_are_pairs_and_the_old_name_still_loads(tmp_path):
  assert config_lib.load_config('tiny').data.size == (32, 32)
  c = config_lib.load_config('tiny', ['data.size=64', 'stage1.crop=16', 'infer.tile=(32, 48)',
                                     'infer.overlap=8'])
  assert (c.data.size, c.stage1.crop, c.stage2.crop, c.infer.tile) == (
      (64, 64), (16, 16), (), (32, 48))
  assert config_lib.load_config('tiny', ['data.resolution=48']).data.size == (48, 48)
  assert config_lib.load_config('tiny', ['data.resolution=48', 'stage3.crop=0']).stage3.crop == ()
  # a user's config file written before data.size
  own = tmp_path / 'own.py'
  own.write_text('from rcae_jax import base_config\n\ndef get_config():\n'
                 '  c = base_config.get_config()\n  c.data.resolution = 64\n  return c\n')
  c = config_lib.load_config(str(own), ['model.depth=3'])
  assert (c.data.size, c.data.resolution) == ((64, 64), None)
  # a run saved before data.size: the same run as today's config of that size
  saved = json.loads(config_lib.to_json(config_lib.load_config('tiny')))
  del saved['data']['size']
  saved['data']['resolution'] = 32
  for group in ('stage1', 'stage2', 'stage3', 'infer'):
    saved.pop(group) if group == 'infer' else saved[group].pop('crop')
  old = config_lib.saved(saved)
  assert old.data.size == (32, 32) and old.stage1.crop == ()
  assert config_lib.same_run(old, config_lib.load_config('tiny'))
  assert not config_lib.same_run(old, config_lib.load_config('tiny', ['data.size=(32, 64)']))


@pytest.mark.parametrize('override,match', [
    ('data.size=(20, 32)', r'data.size=\(20, 32\) \(depth mode halves it 3 times; the DPN/CRD '
     r'twice\): height 20 is not a multiple of 8 \(nearest valid: 16 or 24\)'),
    ('data.size=(32, 36)', r'width 36 is not a multiple of 8 \(nearest valid: 32 or 40\)'),
    ('data.size=(1, 2, 3)', r'data.size=\(1, 2, 3\) must be an int or \(height, width\)'),
    ('stage2.crop=64', r'stage2.crop=\(64, 64\) does not fit in data.size=\(32, 32\)'),
    ('stage1.crop=12', r'stage1.crop=\(12, 12\) .*height 12 is not a multiple of 8'),
    ('infer.tile=16', r'infer.overlap=32 must be smaller than infer.tile=\(16, 16\)'),
    ('data.resize=fit', r"data.resize='fit' must be one of \('stretch', 'keep'\)"),
    ('infer.flips=x', r"infer.flips='x' must be one of '', 'h', 'v', 'hv'"),
])
def test_bad_sizes_refused_with_the_nearest_valid(override, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.load_config('tiny', [override])


def test_cli_sizes_parse():
  assert sizes.parse('256') == (256, 256) and sizes.parse('128x256') == (128, 256)
  with pytest.raises(ValueError, match="size '12x' is not S or HxW"):
    sizes.parse('12x')
  assert sizes.nearest(20, 8) == [16, 24] and sizes.nearest(4, 8) == [8]


def test_crops_depend_on_the_stream_position_alone():
  """Each crop is a window of its image at a position drawn from (key, index): the same
  whatever else is in the batch (so on any device count, and after a resume), and the
  positions cover every offset."""
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (6, 12, 20, 3)), jnp.uint8)
  index = jnp.arange(100, 106, dtype=jnp.int32)
  key = jax.random.PRNGKey(3)
  out = np.asarray(augment.crops(key, images, index, (8, 8)))
  alone = np.asarray(augment.crops(key, images[2:3], index[2:3], (8, 8)))
  np.testing.assert_array_equal(out[2], alone[0])
  for b in range(6):
    hits = [(y, x) for y in range(5) for x in range(13)
            if np.array_equal(np.asarray(images[b, y:y + 8, x:x + 8]), out[b])]
    assert len(hits) == 1
  many = jnp.asarray(np.tile(np.arange(12 * 20, dtype=np.float32).reshape(1, 12, 20, 1),
                             (400, 1, 1, 1)))
  corners = np.asarray(augment.crops(key, many, jnp.arange(400, dtype=jnp.int32), (8, 8)))
  ys, xs = corners[:, 0, 0, 0] // 20, corners[:, 0, 0, 0] % 20
  assert set(ys.astype(int)) == set(range(5)) and set(xs.astype(int)) == set(range(13))
  assert augment.crops(key, images, index, (12, 20)) is images


def test_cover_crops_hold_every_pixel_equally_often():
  """crop_sampling='cover': a 4-px crop of a 16-px side starts at 0 with probability
  4/19 (uniform: 1/13), and every pixel, the first and last included, lies in a crop
  4/19 of the time; the crops are windows of the image either way."""
  n, side, c = 4000, 16, 4
  grid = np.arange(side * side, dtype=np.float32).reshape(1, side, side, 1)
  many = jnp.asarray(np.tile(grid, (n, 1, 1, 1)))
  key, index = jax.random.PRNGKey(7), jnp.arange(n, dtype=jnp.int32)
  for sampling, p_first in (('uniform', 1 / 13), ('cover', 4 / 19)):
    out = np.asarray(augment.crops(key, many, index, (c, c), sampling))
    ys, xs = out[:, 0, 0, 0] // side, out[:, 0, 0, 0] % side
    rows = ys[:, None, None].astype(int) + np.arange(c)[None, :, None]
    cols = xs[:, None, None].astype(int) + np.arange(c)[None, None, :]
    np.testing.assert_array_equal(out[:, :, :, 0], grid[0, :, :, 0][rows, cols])
    assert abs((ys == 0).mean() - p_first) < 0.02 and abs((xs == side - c).mean() - p_first) < 0.02
    if sampling == 'cover':
      held = np.array([((ys <= r) & (r < ys + c)).mean() for r in range(side)])
      np.testing.assert_allclose(held[[0, side - 1]], 4 / 19, atol=0.02)
  with pytest.raises(config_lib.ConfigError, match="stage3.crop_sampling='edge' is not one of"):
    config_lib.load_config('tiny', ['stage3.crop_sampling=edge'])


def test_tiles_cover_and_stitch_a_local_map_exactly():
  """A map whose receptive field (radius 2) lies within overlap/4 of every tile edge is
  stitched exactly, sequences (N, B, ...) included, for tiles that do not divide the image."""
  assert inference.tile_starts(72, 24, 8) == [0, 16, 32, 48]
  assert inference.tile_starts(40, 64, 8) == [0]
  x = jnp.asarray(np.random.default_rng(0).random((2, 40, 72, 3)), jnp.float32)
  fn = lambda p: (ops.mean_filter(p[..., :1], 5, 1), {'recon': jnp.stack([p, 2 * p])})
  whole = fn(x)
  for tile, overlap in (((16, 24), 8), ((24, 24), 12), ((40, 32), 16)):
    got = inference.tiled(fn, x, tile, overlap)
    np.testing.assert_allclose(got[0], whole[0], atol=1e-6)
    np.testing.assert_allclose(got[1]['recon'], whole[1]['recon'], atol=1e-6)
  # overlap/4 < the radius: the seams differ, the rest does not
  got = np.asarray(inference.tiled(fn, x, (40, 24), 4)[0])
  diff = np.abs(got - np.asarray(whole[0]))[0, :, :, 0].max(0)
  assert diff.max() > 1e-3 and diff[:14].max() < 1e-6


def test_tiled_inference_equals_whole_image_inference_when_a_tile_is_the_image(tmp_path):
  """The one inference path with infer.tile: a tile as large as the image is the untiled
  program; smaller tiles of a 32x64 image give maps of the image's shape, whose difference
  from the whole-image map is bounded (the pipeline's receptive field and GroupNorm reach
  the whole image: experiments/receptive_field.py)."""
  config = tiny_config(tmp_path, 'data.size=(32, 64)', 'model.depth=2')
  params = model_lib.init_all(config, jax.random.PRNGKey(0))
  x = np.random.default_rng(1).integers(0, 256, (2, 32, 64, 3), dtype=np.uint8)
  run = lambda c: jax.jit(inference.make_inference(c))(params, x)
  whole = run(config)
  same = run(config_lib.apply_overrides(config, ['infer.tile=(32, 64)', 'infer.overlap=8']))
  np.testing.assert_array_equal(same['map'], whole['map'])
  tiles = run(config_lib.apply_overrides(config, ['infer.tile=32', 'infer.overlap=16']))
  assert tiles['map'].shape == (2, 32, 64)
  assert np.isfinite(tiles['map']).all()
  rel = np.abs(tiles['map'] - whole['map']).max() / np.abs(whole['map']).max()
  assert 0 < rel < 1


def test_flipped_inference_averages_the_maps_of_the_flipped_images(tmp_path):
  """infer.flips: the raw map is the mean of the image's and its flips' maps, each flipped
  back (computed here by separate unflipped calls); smoothing and the score follow it; the
  sequences stay the image's own."""
  config = tiny_config(tmp_path, 'data.size=(32, 64)', 'model.depth=2')
  params = model_lib.init_all(config, jax.random.PRNGKey(0))
  x = np.random.default_rng(2).integers(0, 256, (2, 32, 64, 3), dtype=np.uint8)
  run = lambda c, img: jax.jit(inference.make_inference(c, with_sequences=True))(params, img)
  plain = {axes: run(config, np.flip(x, axes)) for axes in ((), (2,), (1,), (1, 2))}
  unflip = {axes: np.flip(np.asarray(o['raw']), axes) for axes, o in plain.items()}
  for flips, axes in (('h', ((), (2,))), ('hv', ((), (2,), (1,), (1, 2)))):
    got = run(config_lib.apply_overrides(config, [f'infer.flips={flips}']), x)
    want = sum(unflip[a] for a in axes) / len(axes)
    np.testing.assert_allclose(got['raw'], want, rtol=1e-5, atol=1e-6)
    again = inference.rescore(config, np.asarray(got['raw']))
    np.testing.assert_allclose(got['score'], again['score'], rtol=1e-5)
    np.testing.assert_array_equal(got['recon'], plain[()]['recon'])
  assert np.abs(want - unflip[()]).max() > 1e-3  # the flips change the map


def test_a_non_square_run_trains_on_crops_and_predicts_at_full_size(tmp_path):
  """data.size=(16, 32) with 8² crops in stage 1: the steps see crops (their texture bank
  too), validation and predict see whole images; an input of another shape gets a map of
  its own shape."""
  config = tiny_config(tmp_path / 'cache', 'data.size=(16, 32)', 'stage1.crop=8',
                       'model.depth=2', 'stages=(1,)', 'stage1.steps=3', 'log_every=1',
                       'depth_sampling=max')  # one training program: compiling is the cost
  params = model_lib.init_all(config, jax.random.PRNGKey(0))
  assert training.frozen_inputs(1, params, config)['textures'].shape[1:3] == (8, 8)
  training.train(config, tmp_path / 'run')
  det = api.load(tmp_path / 'run')
  assert det.input_shape == (16, 32, 3)
  pred = det.predict(np.zeros((2, 20, 50, 3), np.uint8))
  assert pred.maps.shape == (2, 20, 50)
  assert json.loads((tmp_path / 'run' / 'validation.json').read_text())['n_images'] > 0
  saved = json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert (saved['data']['size'], saved['stage1']['crop']) == ([16, 32], [8, 8])
  # scored on tiles: its own folder; the whole-image results are left as they were
  whole = api.evaluate(tmp_path / 'run', n_pictures=2)
  before = (tmp_path / 'run' / 'eval' / 'metrics.json').read_bytes()
  tiled = api.evaluate(tmp_path / 'run', overrides=['infer.tile=(16, 16)', 'infer.overlap=8'],
                       n_pictures=2)
  out = tmp_path / 'run' / 'eval_infer.overlap=8_infer.tile=(16,16)'
  assert json.loads((out / 'metrics.json').read_text())['mean'] == tiled['mean']
  assert (tmp_path / 'run' / 'eval' / 'metrics.json').read_bytes() == before
  assert tiled['n_test'] == whole['n_test'] and tiled['mean'] != whole['mean']


def test_kept_aspect_boxes_scores_and_metrics_leave_the_padding_out():
  """data.resize='keep': the content box of known shapes; image scores and pixel metrics
  over the valid pixels equal those of the cropped images (the padding holds the highest
  map values here, so counting any of it would change every number)."""
  assert sizes.fit_box((30, 20), (16, 16)) == (0, 2, 16, 11)
  assert sizes.fit_box((100, 250), (64, 64)) == (19, 0, 26, 64)
  assert sizes.fit_box((64, 128), (32, 64)) == (0, 0, 32, 64)
  assert sizes.fit_box((1000, 1), (8, 8)) == (0, 3, 8, 1)
  box = (2, 3, 10, 6)
  valid = sizes.Valid([box] * 4, (16, 12))
  assert valid.shape == (4, 16, 12) and valid[0].sum() == 60 and valid[1:3].shape == (2, 16, 12)
  v = np.asarray(valid)
  rng = np.random.default_rng(0)
  maps = rng.random((4, 16, 12)).astype(np.float32)
  maps[~v] = 10.0
  masks = np.zeros((4, 16, 12), bool)
  masks[1, 4:7, 4:6] = masks[3, 8:11, 5:8] = True
  crop = lambda a: np.stack([sizes.crop_box(x, box) for x in a])
  assert crop(maps).shape == (4, 10, 6) and crop(maps).max() < 10
  for how in ('max', 'topk', 'sum'):
    c = config_lib.load_config('tiny', [f'score.image={how}', 'score.topk=5'])
    got = inference.image_score(jnp.asarray(maps), c, jnp.asarray(v))
    want = inference.image_score(jnp.asarray(crop(maps)), c)
    np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=how)
  c = config_lib.load_config('tiny', ['score.image=topk', 'score.topk=100'])  # > 60 valid
  np.testing.assert_allclose(inference.image_score(jnp.asarray(maps), c, jnp.asarray(v)),
                             crop(maps).reshape(4, -1).mean(1), rtol=1e-6)
  scores, labels = maps.reshape(4, -1).max(1), np.array([0, 1, 0, 1])
  got = metrics.compute_metrics(scores, labels, maps, masks, v)
  want = metrics.compute_metrics(scores, labels, crop(maps), crop(masks))
  assert got == want and metrics.compute_metrics(scores, labels, maps, masks) != want
  streamed = metrics.PixelCurves(20).add(maps, masks, v).result()
  np.testing.assert_allclose(streamed[:3],
                             metrics.PixelCurves(20).add(crop(maps), crop(masks)).result()[:3])
  outside = masks.copy()
  outside[0, 0, 0] = True
  with pytest.raises(ValueError, match='defect pixels marked as padding'):
    metrics.compute_metrics(scores, labels, maps, outside, v)


def test_a_kept_aspect_run_scores_only_the_image_and_predict_matches_evaluation(tmp_path):
  """MTD-layout images of 20x30 kept-aspect in 16²: each image fills its box (PIL bilinear,
  as a stretched one fills the square), the rest is its reflection and never a defect;
  validation plants nothing in the padding; a test file's `predict` score equals its score
  in eval/scores.csv (one inference path), and maps come back at each input's shape."""
  from test_data import make_mtd  # pylint: disable=g-import-not-at-top
  from rcae_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from rcae_jax.data import common  # pylint: disable=g-import-not-at-top
  from rcae_jax.evaluators import validation  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root = make_mtd(tmp_path / 'mtd')
  config = tiny_config(tmp_path / 'cache', 'data.name=mtd', f'data.root={root}',
                       'data.val_fraction=0.25', 'data.channels=1', 'data.resize=keep',
                       'model.depth=2', 'stages=(1,)', 'stage1.steps=3', 'log_every=1',
                       'depth_sampling=max')
  ds = data_lib.load(config, need_test=True)
  assert ds.train.shape[1:] == (16, 16, 1)
  boxes = ds.test_valid.boxes
  assert (boxes == [0, 2, 16, 11]).all() and ds.val_valid.boxes.shape == (1, 4)
  file = np.asarray(Image.open(ds.test_names[0]).convert('L').resize((11, 16), Image.BILINEAR))
  np.testing.assert_array_equal(ds.test[0, :, 2:13, 0], file)
  np.testing.assert_array_equal(ds.test[0, :, :2, 0], file[:, 1::-1])  # reflected
  assert not np.asarray(ds.test_masks)[~np.asarray(ds.test_valid)].any()
  assert np.asarray(ds.test_masks).any()
  np.testing.assert_array_equal(
      ds.test_masks[-1], common.read_mask(root / 'MT_Uneven/Imgs/Uneven_0.png',
                                          root / 'MT_Uneven/Imgs/Uneven_0.jpg', 16, 128, 'keep'))
  for _, images, masks, clean in validation.validation_batches(config, ds.val, 0,
                                                               valid=ds.val_valid):
    outside = ~np.asarray(ds.val_valid[[0] * len(images)])
    assert not masks[outside].any()
    np.testing.assert_array_equal(images[outside], clean[outside])
  training.train(config, tmp_path / 'run')
  api.evaluate(tmp_path / 'run', n_pictures=2)
  rows = (tmp_path / 'run' / 'eval' / 'scores.csv').read_text().splitlines()[1:]
  evaluated = {r.split(',')[0]: float(r.split(',')[3]) for r in rows}
  det = api.load(tmp_path / 'run')
  pred = det.predict([ds.test_names[0], ds.test_names[-1], np.zeros((40, 10, 1), np.uint8)])
  assert [m.shape for m in pred.maps] == [(30, 20), (30, 20), (40, 10)]
  np.testing.assert_allclose(pred.scores[:2], [evaluated[ds.test_names[0]],
                                               evaluated[ds.test_names[-1]]], rtol=1e-6)
