"""MTD (magnetic tile defects): <root>/MT_<class>/Imgs/<name>.jpg + <name>.png masks.

The standard split (DifferNet): the MT_Free images named in differnet_train_split.txt train;
the other MT_Free images and every defective image test. Defect type = class name.
"""
from rcae_jax.data.common import DataError, Sample, require_dir

CLASSES = ('Blowhole', 'Break', 'Crack', 'Fray', 'Uneven')


def categories(root):
  del root
  return ['mtd']


def _images(folder):
  return sorted(p for p in require_dir(folder, 'MTD class').iterdir() if p.suffix == '.jpg')


def samples(root, category):
  del category
  root = require_dir(root, 'MTD root')
  split_file = root / 'differnet_train_split.txt'
  if not split_file.is_file():
    raise DataError(f'MTD root {root}: {split_file.name} (the standard split) is missing')
  listed = {l.strip() for l in split_file.read_text().splitlines() if l.strip()}
  free = _images(root / 'MT_Free' / 'Imgs')
  names = {p.name for p in free}
  missing = sorted(listed - names)
  if missing:
    raise DataError(f'{split_file}: {len(missing)} listed images not in MT_Free/Imgs, '
                    f'e.g. {missing[:3]}')
  train = [Sample(str(p)) for p in free if p.name in listed]
  test = [Sample(str(p)) for p in free if p.name not in listed]
  for cls in CLASSES:
    for p in _images(root / f'MT_{cls}' / 'Imgs'):
      mask = p.with_suffix('.png')
      if not mask.exists():
        raise DataError(f'{p}: its mask {mask.name} is missing')
      test.append(Sample(str(p), str(mask), 1, cls.lower(), mask_min=128))
  return train, test
