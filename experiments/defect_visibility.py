"""How visible each defect type is at a given training resolution, before any model.

A detector cannot mark what the resize has blurred into the surrounding texture. For every
anomalous test image and each resolution asked for, from its full-size mask:

  kept        the mask keeps a pixel after the resize (as `evaluate` binarises it: a pixel
              is defect where at least half of it is); `empty_masks` in metrics.json
  width_px    mean defect width at that resolution: area / length at full size (skeleton
              length, or for compact blobs the side of the square of the same area),
              scaled (a crack 3 px wide in a 330 px image is 0.6 px wide at 64²)
  area_px     the defect's area at that resolution (pixels, fractional coverage summed)
  contrast    |median of the defect's core - median of a ring around it| / the ring's robust
              spread (1.4826 MAD); core = pixels at least half covered, or, for a defect
              thinner than that, the most covered ones; ring = uncovered pixels within
              `--ring` px of the defect
  separability  AUROC between the defects' contrast and the contrast of the *same* core
              and ring laid on normal training images: 50 = a pixel-contrast detector
              cannot tell the defect from normal texture at that resolution, 100 = always can

Contrast is a lower bound on what a learned detector can use (shape and texture are not
measured), so separability near 50 says the resolution, not the model, is the limit.

  python experiments/defect_visibility.py --config mtd:cpu --data mtd:/path/to/mtd \\
      --resolutions 64 128 256 --out runs/visibility

Reads test images and masks to describe the defects (no model, no score, nothing fitted or
chosen); writes <out>/visibility.json, visibility.md and visibility.png (atomically).
"""
import argparse
import pathlib
import sys

import numpy as np
from PIL import Image
from skimage import morphology

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rcae_jax import config as config_lib, figures, files, metrics, tables  # pylint: disable=wrong-import-position
from rcae_jax.data import common, loader  # pylint: disable=wrong-import-position

QUANTITIES = ('kept', 'width_px', 'area_px', 'contrast', 'separability')


def _binary(sample):
  im = Image.open(sample.mask).convert('L')
  return np.asarray(im) >= sample.mask_min


def coverage(mask, resolution):
  """Fraction of each pixel of the resized (resolution²) image the full-size mask covers."""
  im = Image.fromarray(mask.astype(np.float32), mode='F')
  return np.asarray(im.resize((resolution, resolution), Image.BOX), np.float64)


def width_full(mask):
  """Mean width (px at full size): area / length, the length that of the skeleton or, for a
  compact blob whose skeleton is nearly a point, the side of a square of the same area."""
  area = float(mask.sum())
  return area / max(float(morphology.skeletonize(mask).sum()), np.sqrt(area))


def geometry(cover, ring_px):
  """-> (core, ring) bool masks from a coverage map."""
  core = cover >= 0.5
  if not core.any():
    core = cover >= cover.max() * 0.999  # thinner than a pixel: its most covered pixels
  near = morphology.dilation(cover > 0, morphology.disk(ring_px))
  return core, near & (cover == 0)


def contrast(grey, core, ring):
  """|median(core) - median(ring)| / 1.4826 MAD(ring) of one (H, W) image."""
  background = grey[ring]
  spread = 1.4826 * np.median(np.abs(background - np.median(background)))
  return float(abs(np.median(grey[core]) - np.median(background)) / max(spread, 1.0))


def measure_resolution(config, resolution, defects, n_normal, ring_px):
  """{defect type: {quantity: median or share}} at one resolution."""
  cfg = config_lib.apply_overrides(config, [f'data.resolution={resolution}'])
  data = loader.load(cfg, need_test=False)
  pick = np.linspace(0, len(data.train) - 1, min(n_normal, len(data.train))).round()
  normals = data.train[np.unique(pick.astype(int))].astype(np.float64).mean(-1)
  out = {}
  for defect, items in defects.items():
    rows = {'kept': [], 'width_px': [], 'area_px': []}
    own, null = [], []
    for sample, mask, scale in items:
      grey = common.read_image(sample.image, resolution, 1)[..., 0].astype(np.float64)
      cover = coverage(mask, resolution)
      core, ring = geometry(cover, ring_px)
      rows['kept'].append(bool(common.read_mask(sample.mask, sample.image, resolution,
                                                sample.mask_min).any()))
      rows['width_px'].append(scale * resolution)
      rows['area_px'].append(float(cover.sum()))
      own.append(contrast(grey, core, ring))
      null += [contrast(n, core, ring) for n in normals]
    out[defect] = {
        'n_images': len(items),
        'kept': float(np.mean(rows['kept'])),
        'width_px': float(np.median(rows['width_px'])),
        'area_px': float(np.median(rows['area_px'])),
        'contrast': float(np.median(own)),
        'contrast_normal': float(np.median(null)),
        'separability': 100 * metrics.auroc(np.r_[own, null],
                                            np.r_[np.ones(len(own)), np.zeros(len(null))]),
    }
  return out


def defects_of(config):
  """{defect type: [(sample, full-size mask, full-size width / image side)]}."""
  _, _, _, test = loader.load_split(config)
  out = {}
  for s in test:
    if not s.label:
      continue
    if not s.mask:
      raise common.DataError(f'{s.image}: anomalous test image without a mask; defect '
                             'visibility needs pixel masks')
    mask = _binary(s)
    if not mask.any():
      continue
    side = float(np.sqrt(mask.shape[0] * mask.shape[1]))
    out.setdefault(s.defect, []).append((s, mask, width_full(mask) / side))
  if not out:
    raise common.DataError(f'{config.data.name}: no anomalous test image with a defect in '
                           'its mask')
  return dict(sorted(out.items()))


def measure(config, resolutions, n_normal=16, ring_px=3):
  defects = defects_of(config)
  return {'resolutions': list(resolutions), 'ring_px': ring_px, 'n_normal': n_normal,
          'by_resolution': {str(r): measure_resolution(config, r, defects, n_normal, ring_px)
                            for r in resolutions}}


def write(out_dir, result):
  out_dir = pathlib.Path(out_dir)
  files.write_json(out_dir / 'visibility.json', result)
  res = result['resolutions']
  by = result['by_resolution']
  kinds = list(by[str(res[0])])
  head = ['defect', 'images'] + [f'{q} @{r}²' for q in ('kept %', 'width px', 'contrast',
                                                        'separability') for r in res]
  rows = []
  for d in kinds:
    cells = [d, by[str(res[0])][d]['n_images']]
    for q, f in (('kept', 100.0), ('width_px', 1.0), ('contrast', 1.0), ('separability', 1.0)):
      cells += [f * by[str(r)][d][q] for r in res]
    rows.append(cells)
  text = (f'Contrast: |core - ring| / ring spread, ring {result["ring_px"]} px; separability: '
          f'AUROC of each defect against its own geometry on {result["n_normal"]} normal '
          'training images (50 = indistinguishable).\n\n' + tables.markdown(head, rows) + '\n')
  files.atomic_write(out_dir / 'visibility.md', text)
  panels = {'masks kept (%)': {d: [100 * by[str(r)][d]['kept'] for r in res] for d in kinds},
            'width (px)': {d: [by[str(r)][d]['width_px'] for r in res] for d in kinds},
            'separability (AUROC)': {d: [by[str(r)][d]['separability'] for r in res]
                                     for d in kinds}}
  figures.curve_panels(out_dir / 'visibility.png', res, panels, 'training resolution (px)')
  return text


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='mtd:cpu', help='a shipped config or path[:arg]')
  parser.add_argument('--data', required=True, help='dataset as NAME[:ROOT]')
  parser.add_argument('--category', default=None)
  parser.add_argument('--resolutions', type=int, nargs='+', default=[64, 128, 256])
  parser.add_argument('--normals', type=int, default=16,
                      help='normal training images each defect geometry is laid on')
  parser.add_argument('--ring', type=int, default=3, help='ring width around a defect (px)')
  parser.add_argument('--out', type=pathlib.Path, required=True)
  args = parser.parse_args(argv)
  for name, v, lo in (('--resolutions', min(args.resolutions), 8), ('--normals', args.normals, 1),
                      ('--ring', args.ring, 1)):
    if v < lo:
      parser.error(f'{name} must be at least {lo}, got {v}')
  try:
    config = config_lib.load_config(args.config, config_lib.data_overrides(args.data, args.category))
    result = measure(config, sorted(set(args.resolutions)), args.normals, args.ring)
  except (config_lib.ConfigError, common.DataError) as e:
    raise SystemExit(str(e)) from None
  print(write(args.out, result))


if __name__ == '__main__':
  main()
