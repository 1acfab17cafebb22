"""Loaders on miniature MVTec / VisA / MTD / folder trees, training flips, and every bad
input named."""
import jax
import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config
from rcae_jax import augment, parallel
from rcae_jax import data as data_lib
from rcae_jax.data import DataError
from rcae_jax.data import batches


def _img(path, size=(32, 32), mode='RGB', value=None, seed=0):
  path.parent.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  shape = (size[1], size[0]) + ((3,) if mode == 'RGB' else ())
  arr = rng.integers(0, 255, shape).astype(np.uint8) if value is None else np.full(shape, value, np.uint8)
  Image.fromarray(arr).save(path)
  return path


def make_mvtec(root, category='bottle', n_train=6, mask_size=(32, 32)):
  base = root / category
  for i in range(n_train):
    _img(base / 'train' / 'good' / f'{i:03d}.png', seed=i)
  for i in range(2):
    _img(base / 'test' / 'good' / f'{i:03d}.png', seed=10 + i)
    _img(base / 'test' / 'crack' / f'{i:03d}.png', seed=20 + i)
    mask = np.zeros((mask_size[1], mask_size[0]), np.uint8)
    mask[4:12, 4:12] = 255
    (base / 'ground_truth' / 'crack').mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(base / 'ground_truth' / 'crack' / f'{i:03d}_mask.png')
  return root


def make_visa(root):
  lines = ['object,split,label,image,mask']
  for i in range(5):
    _img(root / 'candle' / 'Data' / 'Images' / 'Normal' / f'{i}.JPG', seed=i)
    lines.append(f'candle,train,normal,candle/Data/Images/Normal/{i}.JPG,')
  for i in range(2):
    _img(root / 'candle' / 'Data' / 'Images' / 'Anomaly' / f'{i}.JPG', seed=9 + i)
    _img(root / 'candle' / 'Data' / 'Masks' / 'Anomaly' / f'{i}.png', mode='L', value=3)
    lines.append(f'candle,test,anomaly,candle/Data/Images/Anomaly/{i}.JPG,'
                 f'candle/Data/Masks/Anomaly/{i}.png')
  _img(root / 'candle' / 'Data' / 'Images' / 'Normal' / 't.JPG', seed=30)
  lines.append('candle,test,normal,candle/Data/Images/Normal/t.JPG,')
  (root / 'split_csv').mkdir(parents=True)
  (root / 'split_csv' / '1cls.csv').write_text('\n'.join(lines) + '\n')
  return root


def make_mtd(root):
  names = []
  for i in range(6):
    _img(root / 'MT_Free' / 'Imgs' / f'free_{i}.jpg', (20, 30), 'L', seed=i)
    _img(root / 'MT_Free' / 'Imgs' / f'free_{i}.png', (20, 30), 'L', value=0)
    names.append(f'free_{i}.jpg')
  (root / 'differnet_train_split.txt').write_text('\n'.join(names[:4]) + '\n')
  for cls in ('Blowhole', 'Break', 'Crack', 'Fray', 'Uneven'):
    _img(root / f'MT_{cls}' / 'Imgs' / f'{cls}_0.jpg', (20, 30), 'L', seed=40)
    mask = np.zeros((30, 20), np.uint8)
    mask[5:15, 5:10] = 255
    Image.fromarray(mask).save(root / f'MT_{cls}' / 'Imgs' / f'{cls}_0.png')
  return root


def _cfg(tmp_path, name, root, *ov):
  return tiny_config(tmp_path / 'cache', f'data.name={name}', f'data.root={root}',
                     'data.val_fraction=0.25', *ov)


def test_mvtec(tmp_path):
  root = make_mvtec(tmp_path / 'mvtec')
  ds = data_lib.load(_cfg(tmp_path, 'mvtec', root), need_test=True)
  assert ds.category == 'bottle' and ds.train.shape == (4, 16, 16, 3) and len(ds.val) == 2
  assert ds.test.shape == (4, 16, 16, 3) and ds.test_masks.shape == (4, 16, 16)
  assert ds.test_labels.tolist() == [1, 1, 0, 0]
  assert ds.test_masks[:2].any(axis=(1, 2)).all() and not ds.test_masks[2:].any()
  assert set(ds.test_defects) == {'crack', 'good'}


def test_visa(tmp_path):
  ds = data_lib.load(_cfg(tmp_path, 'visa', make_visa(tmp_path / 'visa')), need_test=True)
  assert ds.category == 'candle' and len(ds.train) + len(ds.val) == 5
  assert ds.test_labels.tolist() == [1, 1, 0]
  assert ds.test_masks[:2].all()  # mask value 3: non-zero is anomalous in VisA


def test_mtd_standard_split_grayscale(tmp_path):
  cfg = _cfg(tmp_path, 'mtd', make_mtd(tmp_path / 'mtd'), 'data.channels=1')
  ds = data_lib.load(cfg, need_test=True)
  assert len(ds.train) + len(ds.val) == 4 and ds.train.shape[-1] == 1
  assert len(ds.test) == 2 + 5 and ds.test_labels.sum() == 5
  assert set(ds.test_defects) == {'good', 'blowhole', 'break', 'crack', 'fray', 'uneven'}


def test_folder_and_builtin(tmp_path):
  root = make_mvtec(tmp_path / 'f', 'mine')
  ds = data_lib.load(_cfg(tmp_path, 'folder', root / 'mine'), need_test=True)
  assert len(ds.test) == 4
  ds = data_lib.load(tiny_config(tmp_path / 'cache'), need_test=True)
  assert ds.category == 'brick' and ds.test_labels.sum() == 40
  assert set(ds.test_defects) == {'good', 'texture', 'scratch'}
  assert 0.005 < ds.test_masks[ds.test_labels == 1].mean() < 0.3


def test_train_fraction_and_val_are_disjoint(tmp_path):
  cfg = tiny_config(tmp_path / 'cache', 'data.train_fraction=0.1')
  _, train, val, _ = data_lib.load_split(cfg)
  assert len(train) == 7 and not set(train) & set(val)


def test_batches_are_a_function_of_step():
  """Step 7 of batch 4 over 10 images holds stream positions 28..31: the last two of epoch
  2's permutation and the first two of epoch 3's (computed here independently)."""
  perm = lambda epoch: np.random.default_rng((0, epoch)).permutation(10)
  expected = np.concatenate([perm(2)[8:10], perm(3)[0:2]])
  np.testing.assert_array_equal(batches.batch_indices(10, 4, 0, 7), expected)
  assert not np.array_equal(perm(2), perm(3))
  mesh = parallel.make_mesh()
  images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
  full = list(batches.prefetch_to_device(images, 4, 0, 0, 9, mesh))
  firsts = [np.asarray(b['image'])[:, 0, 0, 0] for b, _ in full]
  np.testing.assert_array_equal(firsts[7], expected)
  # Resume from grain's saved state after step 4, and (old checkpoints) from the step alone.
  for state in (full[4][1], None):
    resumed = [np.asarray(b['image'])[:, 0, 0, 0]
               for b, _ in batches.prefetch_to_device(images, 4, 0, 5, 9, mesh, state=state)]
    np.testing.assert_array_equal(np.stack(firsts[5:]), np.stack(resumed))
  with pytest.raises(batches.DataPositionError, match='step 6 starts at 24'):
    list(batches.prefetch_to_device(images, 4, 0, 6, 9, mesh, state=full[4][1]))
  epoch = np.concatenate([batches.batch_indices(10, 5, 0, s) for s in range(2)])
  assert sorted(epoch.tolist()) == list(range(10))  # each epoch visits every image once


def test_each_host_reads_its_contiguous_slice():
  """grain gives process p of P the sampler indices p, p+P, ...; HostSlices maps them to
  p's slice of each global batch, so the hosts together read each batch exactly once."""
  global_batch, hosts = 8, 2
  sampler = batches.HostSlices(global_batch, hosts)
  for p in range(hosts):
    keys = [sampler[k * hosts + p].record_key for k in range(3 * global_batch // hosts)]
    want = [s * global_batch + p * 4 + j for s in range(3) for j in range(4)]
    assert keys == want
  with pytest.raises(ValueError, match='does not split'):
    batches.HostSlices(6, 4)


@pytest.mark.parametrize('breakage,match', [
    ('missing', 'does not exist'),
    ('truncated', 'unreadable or truncated'),
    ('mask_size', 'does not match its image'),
    ('empty', 'empty category'),
    ('no_anomalies', 'no anomalies'),
    ('no_mask', 'no mask'),
])
def test_bad_input_is_named(tmp_path, breakage, match):
  root = make_mvtec(tmp_path / 'mvtec', mask_size=(16, 16) if breakage == 'mask_size' else (32, 32))
  base = root / 'bottle'
  bad_file = None
  if breakage == 'missing':
    bad_file = base / 'train' / 'good'
    for p in bad_file.iterdir():
      p.unlink()
    bad_file.rmdir()
  elif breakage == 'truncated':
    bad_file = base / 'test' / 'crack' / '001.png'
    bad_file.write_bytes(bad_file.read_bytes()[:60])
  elif breakage == 'mask_size':
    bad_file = base / 'ground_truth' / 'crack' / '000_mask.png'
  elif breakage == 'empty':
    for p in (base / 'train' / 'good').iterdir():
      p.unlink()
  elif breakage == 'no_anomalies':
    for p in (base / 'test' / 'crack').iterdir():
      p.unlink()
  elif breakage == 'no_mask':
    bad_file = base / 'test' / 'crack' / '000.png'
    (base / 'ground_truth' / 'crack' / '000_mask.png').unlink()
  with pytest.raises(DataError, match=match) as err:
    data_lib.load(_cfg(tmp_path, 'mvtec', root), need_test=True)
  if bad_file is not None:
    assert str(bad_file.name) in str(err.value)


@pytest.mark.parametrize('layout,resize', [('mvtec', 'stretch'), ('visa', 'stretch'),
                                           ('mtd', 'stretch'), ('folder', 'stretch'),
                                           ('mtd', 'keep')])
def test_prepared_records_equal_the_decoded_arrays(tmp_path, layout, resize):
  """TFDS array_record written by `prepare` and read back lazily holds exactly the arrays,
  labels, defects and names of the in-memory path (kept-aspect: and the content boxes), with
  the same held-out split; no TensorFlow is needed to build or read it."""
  import sys  # pylint: disable=g-import-not-at-top
  make = {'mvtec': make_mvtec, 'visa': make_visa, 'mtd': make_mtd,
          'folder': lambda r: make_mvtec(r, 'mine') / 'mine'}[layout]
  root = make(tmp_path / layout)
  cfg = _cfg(tmp_path, layout, root, *(['data.channels=1'] if layout == 'mtd' else []),
             f'data.resize={resize}')
  files = data_lib.load(cfg, need_test=True)
  path = data_lib.prepare(cfg)
  assert sorted(p.name.split('.')[0] for p in path.glob('*.array_record*')) == [
      'rcae_images-test', 'rcae_images-train']
  lazy = data_lib.load(tiny_config(tmp_path / 'cache', *[
      o for o in cfg_overrides(cfg)], 'data.source=prepared', 'data.root=/nonexistent'),
                       need_test=True)
  assert lazy.category == files.category
  for field in ('train', 'val', 'test', 'test_masks'):
    got, want = getattr(lazy, field), getattr(files, field)
    assert got.shape == want.shape and got.dtype == want.dtype, field
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(got[1:3], want[1:3])
    pick = np.array([len(want) - 1, 0])
    np.testing.assert_array_equal(got[pick], want[pick])
  np.testing.assert_array_equal(lazy.test_labels, files.test_labels)
  assert lazy.test_defects == files.test_defects and lazy.test_names == files.test_names
  for field in ('train_valid', 'val_valid', 'test_valid'):
    got, want = getattr(lazy, field), getattr(files, field)
    assert (got is None) == (want is None) == (resize == 'stretch'), field
    if want is not None:
      np.testing.assert_array_equal(got.boxes, want.boxes)
      assert (want.boxes[:, 2:] < 16).any()  # 20x30 images: narrower than the square
  assert 'tensorflow' not in sys.modules


def cfg_overrides(cfg):
  d = cfg.data
  return [f'data.name={d.name}', f'data.val_fraction={d.val_fraction}',
          f'data.channels={d.channels}', f'data.resize={d.resize}']


def test_unprepared_data_is_named(tmp_path):
  cfg = tiny_config(tmp_path / 'cache', 'data.source=prepared', 'data.category=brick')
  with pytest.raises(DataError, match='is not prepared; run python -m rcae_jax prepare'):
    data_lib.load(cfg)


def test_flips_are_per_example_and_only_the_ones_asked_for():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (64, 5, 7, 1)).astype(np.uint8)  # non-square: axes matter
  index = np.arange(100, 164, dtype=np.int32)
  key = jax.random.PRNGKey(3)
  np.testing.assert_array_equal(augment.flips(key, images, index, ''), images)
  seen = {}
  for mode in ('h', 'v', 'hv'):
    out = np.asarray(augment.flips(key, images, index, mode))
    kinds = []
    for x, y in zip(images, out):
      allowed = {'none': x, 'h': x[:, ::-1], 'v': x[::-1], 'hv': x[::-1, ::-1]}
      kind = [k for k, v in allowed.items() if (v == y).all()]
      assert kind, mode
      kinds.append(kind[0])
    seen[mode] = kinds
    assert set(kinds) <= {'none', mode} | ({'h', 'v'} if mode == 'hv' else set())
    assert 16 < sum(k != 'none' for k in kinds) < 64, (mode, kinds)  # about half flipped
  assert set(seen['hv']) == {'none', 'h', 'v', 'hv'}
  # an example flips by its stream position alone: any order or split of the batch agrees
  perm = rng.permutation(64)
  out = np.asarray(augment.flips(key, images, index, 'hv'))
  np.testing.assert_array_equal(
      np.asarray(augment.flips(key, images[perm], index[perm], 'hv')), out[perm])
  np.testing.assert_array_equal(
      np.asarray(augment.flips(key, images[:8], index[:8], 'hv')), out[:8])
  with pytest.raises(ValueError, match="flip='x' is not one of"):
    augment.flips(key, images, index, 'x')


def test_gains_scale_each_image_within_the_range_and_by_position():
  rng = np.random.default_rng(0)
  images = rng.uniform(0.05, 0.9, (64, 5, 7, 1)).astype(np.float32)
  index = np.arange(100, 164, dtype=np.int32)
  key = jax.random.PRNGKey(3)
  np.testing.assert_array_equal(augment.gains(key, images, index, 0.0), images)
  out = np.asarray(augment.gains(key, images, index, 0.3))
  ratio = out / images
  unclipped = out < 1
  # one gain per image, the same on every pixel it did not clip
  per_image = np.array([r[u].mean() for r, u in zip(ratio, unclipped)])
  for r, u, g in zip(ratio, unclipped, per_image):
    np.testing.assert_allclose(r[u], g, rtol=1e-5)
  assert np.exp(-0.3) - 1e-6 <= per_image.min() and per_image.max() <= np.exp(0.3) + 1e-6
  assert per_image.min() < 0.85 and per_image.max() > 1.18  # the range is used
  assert (out[~unclipped] == 1).all() and out.max() <= 1 and (~unclipped).any()
  perm = rng.permutation(64)
  np.testing.assert_array_equal(
      np.asarray(augment.gains(key, images[perm], index[perm], 0.3)), out[perm])
  with pytest.raises(ValueError, match='jitter=1.5 must be in'):
    augment.gains(key, images, index, 1.5)


def test_recon_noise_draws_one_std_per_image_by_position():
  seq = np.full((3, 48, 32, 32, 1), 0.5, np.float32)  # (steps, batch, H, W, C)
  index = np.arange(7, 55, dtype=np.int32)
  key = jax.random.PRNGKey(4)
  np.testing.assert_array_equal(augment.recon_noise(key, seq, index, 0.0), seq)
  noise = np.asarray(augment.recon_noise(key, seq, index, 0.02)) - 0.5
  std = noise.std(axis=(0, 2, 3, 4))  # 3 x 1024 draws per image: its s within ~2.5 %
  assert std.max() < 0.02 * 1.05 and std.min() < 0.004 and std.max() > 0.016
  np.testing.assert_allclose(noise.mean(axis=(0, 2, 3, 4)), 0, atol=3 * std.max() / 55)
  # one s per image: every step of an image shares it, the steps' noise differs
  per_step = noise.std(axis=(2, 3, 4))
  np.testing.assert_allclose(per_step, np.broadcast_to(std, per_step.shape), rtol=0.1, atol=1e-4)
  assert not np.allclose(noise[0], noise[1])
  perm = np.random.default_rng(0).permutation(48)
  np.testing.assert_allclose(np.asarray(augment.recon_noise(key, seq[:, perm], index[perm], 0.02)),
                             noise[:, perm] + 0.5, rtol=0, atol=1e-7)
  with pytest.raises(ValueError, match='recon_noise=0.9 must be in'):
    augment.recon_noise(key, seq, index, 0.9)
