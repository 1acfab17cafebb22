"""MVTec AD layout: <root>/<cat>/train/good, test/<defect>, ground_truth/<defect>/<name>_mask.png."""
import pathlib

from rcae_jax.data.common import DataError, Sample, list_images, require_dir


def categories(root):
  root = require_dir(root, 'MVTec AD root')
  cats = sorted(p.name for p in root.iterdir() if (p / 'train').is_dir())
  if not cats:
    raise DataError(f'MVTec AD root {root}: no <category>/train folders found')
  return cats


def samples(root, category, mask_required=True):
  base = require_dir(pathlib.Path(root) / category, f'category {category!r}')
  train = [Sample(p) for p in list_images(require_dir(base / 'train' / 'good', 'train/good'))]
  return train, test_samples(base, mask_required)


def test_samples(base, mask_required=True):
  """test/<defect>/*.png with masks in ground_truth/<defect>/; none if there is no test/."""
  test = []
  test_dir = base / 'test'
  if test_dir.is_dir():
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
      defect = defect_dir.name
      for img in list_images(defect_dir):
        if defect == 'good':
          test.append(Sample(img))
          continue
        stem = pathlib.Path(img).stem
        gt = base / 'ground_truth' / defect
        mask = next((str(m) for m in (gt / f'{stem}_mask.png', gt / f'{stem}.png') if m.exists()),
                    None)
        if mask is None and mask_required:
          raise DataError(f'{img}: no mask at {gt / (stem + "_mask.png")}')
        test.append(Sample(img, mask, 1, defect))
  return test
