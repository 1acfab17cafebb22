"""Where a finished run's normal maps peak, and why: profiles by distance to the border.

`validation.json`'s border_share says how often a held-out normal image's map maximum lies
within 8 px of the border; it cannot say whether that is the model (padding inventing an
edge) or the data (tiles cropped with their own dark boundary). This study measures, ring
by ring (pixels at distance 0, 1, ... from the nearest image edge, and the interior), on
the training normals the model was fitted to and on the held-out normals:

  image_mean       the image's mean grey level (0..255)
  image_contrast   |x - its 3 x 3 mean|: how much structure the ring itself carries
  recon_error      |x - r| of the last reconstruction the map is computed from
  map_p99          the 99th percentile of the raw (unsmoothed) map
  argmax_share     the share of images whose smoothed-map maximum lies on the ring

A padding artefact shows as recon_error / map_p99 rising at the border while the images'
own contrast does not; structure in the data shows in image_contrast as well.

  python experiments/border_profile.py runs/restoring/<variant>/seed0/mtd [--train 256]

Writes <run>/border_profile.json, border_profile.md and border_profile.png (atomically).
Never reads the test set.
"""
import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rcae_jax import checkpoints, evaluators, figures, files, inference, sizes, tables  # pylint: disable=wrong-import-position
from rcae_jax.evaluators import validation  # pylint: disable=wrong-import-position

QUANTITIES = ('image_mean', 'image_contrast', 'recon_error', 'map_p99', 'argmax_share')


def distance_to_border(h, w=None):
  """(h, w) int (w = h: a square): each pixel's distance to the nearest image edge (0 on the
  edge)."""
  w = h if w is None else w
  return distance_to_box([(0, 0, h, w)], h, w)[0]


def distance_to_box(boxes, h, w):
  """(B, H, W) int: each pixel's distance to the nearest edge of its image's content box
  (top, left, height, width) (kept-aspect runs: `sizes.Valid.boxes`), -1 in the padding."""
  yy, xx = np.mgrid[:h, :w]
  t, l, bh, bw = (np.asarray(boxes)[:, i, None, None] for i in range(4))
  dist = np.minimum.reduce([yy - t, xx - l, t + bh - 1 - yy, l + bw - 1 - xx])
  return np.where(dist >= 0, dist, -1)


def local_contrast(grey):
  """|x - its 3 x 3 mean| of (B, H, W) images, borders reflected."""
  padded = np.pad(grey, ((0, 0), (1, 1), (1, 1)), mode='reflect')
  h, w = grey.shape[1:]
  mean = sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0
  return np.abs(grey - mean)


def profile(images, out, rings, boxes=None):
  """{quantity: [value per ring 0..rings-1, then the interior]} of one image set.

  images: uint8 (B, H, W, C); out: inference outputs with the sequences (only the last
  reconstruction is read); boxes: kept-aspect images' content boxes (B, 4): rings are then
  counted from each box's edge and the padding is left out of every number."""
  n, h, w = images.shape[:3]
  dist = distance_to_box([(0, 0, h, w)] * n if boxes is None else boxes, h, w)
  if rings < 1 or not (dist >= rings).any():
    raise ValueError(f'rings={rings}: a {sizes.label(images.shape[1:3])} image has no pixel {rings} px or more from '
                     'its border; use fewer rings')
  where = [dist == k for k in range(rings)] + [dist >= rings]
  grey = images.astype(np.float64).mean(-1)
  x = images.astype(np.float32) / 255.0
  last = np.asarray(out['enhanced' if 'enhanced' in out else 'recon'])[-1]
  per_pixel = {'image_mean': grey, 'image_contrast': local_contrast(grey),
               'recon_error': np.abs(last - x).mean(-1)}
  raw, smoothed = np.asarray(out['raw']), np.asarray(out['map'])
  inside = np.where(dist >= 0, smoothed, -np.inf).reshape(n, -1)
  at_max = dist.reshape(n, -1)[np.arange(n), inside.argmax(1)]
  result = {k: [float(v[w].mean()) for w in where] for k, v in per_pixel.items()}
  result['map_p99'] = [float(np.quantile(raw[w], 0.99)) for w in where]
  result['argmax_share'] = [float(np.mean(at_max == k)) for k in range(rings)]
  result['argmax_share'].append(float(np.mean(at_max >= rings)))
  result['border_share'] = validation.border_count(smoothed, valid=dist >= 0) / n
  return result


def measure(run_dir, n_train=256, rings=None):
  """-> {'rings', 'border_px', 'uniform_border_share', 'train': profile, 'held_out': profile}."""
  ctx = evaluators.Context.of_run(run_dir, need_test=False)
  cfg = ctx.config
  size = sizes.image_size(cfg)
  train = np.asarray(ctx.dataset.train)
  pick = np.linspace(0, len(train) - 1, min(n_train, len(train))).round().astype(int)
  pick = np.unique(pick)
  sets = {'train': train[pick], 'held_out': np.asarray(ctx.dataset.val)}
  kept = ctx.dataset.train_valid is not None  # data.resize=keep: rings from the content box
  boxes = {'train': ctx.dataset.train_valid.boxes[pick] if kept else None,
           'held_out': ctx.dataset.val_valid.boxes if kept else None}
  side = np.concatenate([b[:, 2:] for b in boxes.values()]).min() if kept else min(size)
  rings = rings or min(16, (int(side) - 1) // 2)  # some interior left in every image
  # with kept aspect, of the held-out images' own boxes (the band of each box, averaged)
  uniform = (np.mean([validation.uniform_border_share((int(b[2]), int(b[3])))
                      for b in boxes['held_out']]) if kept and len(boxes['held_out'])
             else validation.uniform_border_share(size))
  result = {'rings': rings, 'border_px': validation.BORDER_PX,
            'uniform_border_share': float(uniform)}
  for name, images in sets.items():
    if not len(images):
      continue
    result[name] = {'n_images': len(images),
                    **profile(images, _last_and_maps(cfg, ctx.params, images), rings,
                              boxes[name])}
  return result


def _last_and_maps(config, params, images):
  """inference outputs with only the last reconstruction kept: the host holds one batch's
  sequences at a time, not the whole set's."""
  parts = []
  for _, out in inference.batches(config, params, images, with_sequences=True):
    key = 'enhanced' if 'enhanced' in out else 'recon'
    parts.append({'recon': out[key][-1:], 'raw': out['raw'], 'map': out['map']})
  return {k: np.concatenate([p[k] for p in parts], axis=1 if k == 'recon' else 0)
          for k in parts[0]}


def _shown(result, s, q):
  """What the table and plot show: argmax shares as they are, the rest / interior."""
  return result[s][q] if q == 'argmax_share' else relative(result[s][q])


def relative(values):
  """A ring profile divided by its interior value (the last entry)."""
  return [v / values[-1] if values[-1] else float('nan') for v in values]


def write(run_dir, result):
  run_dir = pathlib.Path(run_dir)
  files.write_json(run_dir / 'border_profile.json', result)
  sets = [s for s in ('train', 'held_out') if s in result]
  rings = result['rings']
  head = ['set', 'quantity'] + [f'ring {k}' for k in range(rings)] + ['interior']
  rows = []
  for s in sets:
    for q in QUANTITIES:
      rows.append([s, q if q == 'argmax_share' else f'{q} / interior'] +
                  [f'{v:.2f}' for v in _shown(result, s, q)])
  shares = ', '.join(f'{s} {100 * result[s]["border_share"]:.1f} %' for s in sets)
  text = (f'Border share (maximum within {result["border_px"]} px): {shares}; '
          f'{100 * result["uniform_border_share"]:.1f} % for maps with no preferred place.\n\n'
          + tables.markdown(head, rows) + '\n')
  files.atomic_write(run_dir / 'border_profile.md', text)
  panels = {(q if q == 'argmax_share' else f'{q} / interior'): {
      s.replace('_', '-'): _shown(result, s, q)[:rings] for s in sets} for q in QUANTITIES}
  figures.curve_panels(run_dir / 'border_profile.png', range(rings), panels,
                       'distance to the border (px)')
  return text


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('run', type=pathlib.Path, help='a finished run (its model/ bundle)')
  parser.add_argument('--train', type=int, default=256,
                      help='training images profiled (evenly spaced; default 256)')
  args = parser.parse_args(argv)
  if args.train < 1:
    parser.error(f'--train must be at least 1, got {args.train}')
  try:
    result = measure(args.run, args.train)
  except checkpoints.BundleError as e:
    raise SystemExit(str(e)) from None
  print(write(args.run, result))


if __name__ == '__main__':
  main()
