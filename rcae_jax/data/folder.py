"""Any folder: <root>/train/*.png normal images; optional <root>/test/{good,<defect>}/ and
<root>/ground_truth/<defect>/<name>[_mask].png (same naming as MVTec, masks optional)."""
import pathlib

from rcae_jax.data import mvtec
from rcae_jax.data.common import Sample, list_images, require_dir


def categories(root):
  return [pathlib.Path(root).name]


def samples(root, category):
  del category
  root = require_dir(root, 'folder dataset root')
  train_dir = root / 'train' / 'good' if (root / 'train' / 'good').is_dir() else root / 'train'
  train = [Sample(p) for p in list_images(require_dir(train_dir, 'folder dataset train/'))]
  return train, mvtec.test_samples(root, mask_required=False)
