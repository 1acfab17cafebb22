"""VisA: <root>/split_csv/1cls.csv with columns object, split, label, image, mask."""
import csv
import pathlib

from rcae_jax.data.common import DataError, Sample


def _rows(root):
  path = pathlib.Path(root) / 'split_csv' / '1cls.csv'
  if not path.is_file():
    raise DataError(f'VisA root {root}: {path} does not exist')
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  need = {'object', 'split', 'label', 'image', 'mask'}
  if not rows or not need <= set(rows[0]):
    raise DataError(f'{path}: expected columns {sorted(need)}')
  return rows


def categories(root):
  return sorted({r['object'] for r in _rows(root)})


def samples(root, category):
  root = pathlib.Path(root)
  train, test = [], []
  for r in _rows(root):
    if r['object'] != category:
      continue
    img = str(root / r['image'])
    anomalous = r['label'].strip().lower() in ('anomaly', 'anomalous', '1', 'bad')
    if r['split'] == 'train':
      if not anomalous:
        train.append(Sample(img))
    elif anomalous:
      if not r['mask']:
        raise DataError(f'{img}: anomalous test image without a mask in 1cls.csv')
      test.append(Sample(img, str(root / r['mask']), 1, 'anomaly'))
    else:
      test.append(Sample(img))
  return train, test
