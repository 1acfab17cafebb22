"""Peak host memory (RSS) of `train` and `evaluate` at two dataset sizes, reading the data
in memory (data.source=files) or from prepared array_record (data.source=prepared).

  python experiments/host_memory.py --workdir runs/host_memory --sizes 100 400 --resolution 512

Generates a synthetic MVTec-layout category per size (N normal training images, N/4 normal
and N/4 defective test images with masks, smooth random textures at the given resolution),
prepares it, then runs each command in a fresh process and records its peak RSS
(getrusage of a launcher that runs nothing else). Writes results.json and results.md.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
_LAUNCH = ('import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; '
           'print(r, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)')


def make_category(root, n_train, size, seed=0):
  """<root>/synthetic/{train/good, test/good, test/spot, ground_truth/spot}."""
  rng = np.random.default_rng(seed)
  base = root / 'synthetic'

  def texture():
    low = rng.random((size // 32, size // 32, 3))
    img = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((size, size),
                                                                           Image.BICUBIC))
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)

  def save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)

  for i in range(n_train):
    save(base / 'train' / 'good' / f'{i:04d}.png', texture())
  for i in range(max(2, n_train // 4)):
    save(base / 'test' / 'good' / f'{i:04d}.png', texture())
    img, mask = texture(), np.zeros((size, size), np.uint8)
    y, x = rng.integers(0, size - size // 8, 2)
    img[y:y + size // 8, x:x + size // 8] = rng.integers(0, 255, 3)
    mask[y:y + size // 8, x:x + size // 8] = 255
    save(base / 'test' / 'spot' / f'{i:04d}.png', img)
    save(base / 'ground_truth' / 'spot' / f'{i:04d}_mask.png', mask)
  return base


def peak_rss(cmd, log):
  """(return code, peak RSS in MiB, seconds) of cmd in a fresh process tree."""
  t0 = time.perf_counter()
  with open(log, 'w') as f:
    out = subprocess.run([sys.executable, '-c', _LAUNCH, *cmd], stdout=subprocess.PIPE,
                         stderr=f, text=True, cwd=ROOT)
  last = out.stdout.strip().splitlines()[-1].split()
  return int(last[0]), int(last[1]) / 1024, time.perf_counter() - t0


def main():
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--sizes', type=int, nargs='+', default=[100, 400])
  ap.add_argument('--resolution', type=int, default=512)
  ap.add_argument('--commands', nargs='+', default=['train', 'evaluate'],
                  choices=['train', 'evaluate'])
  ap.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE')
  args = ap.parse_args()
  work = pathlib.Path(args.workdir).absolute()
  common = [f'data.resolution={args.resolution}', f'data.cache_dir={work / "cache"}',
            'stage1.steps=4', 'stage2.steps=2', 'stage3.steps=2', 'log_every=1',
            'eval_batch_size=8', *args.set]
  rows = []
  for n in args.sizes:
    root = work / f'data{n}'
    if not (root / 'synthetic').exists():
      print(f'generating {n} training images at {args.resolution}²', flush=True)
      make_category(root, n, args.resolution)
    data = ['--data', f'folder:{root / "synthetic"}']
    code, _, _ = peak_rss([sys.executable, '-m', 'rcae_jax', 'prepare', '--config', 'tiny',
                           *data, '--set', *common], work / f'prepare{n}.log')
    assert code == 0, f'prepare failed: {work}/prepare{n}.log'
    for source in ('files', 'prepared'):
      run = work / f'run{n}_{source}'
      for cmd in args.commands:
        argv = ([sys.executable, '-m', 'rcae_jax', 'train', '--config', 'tiny', '--workdir',
                 str(run), *data, '--set', *common, f'data.source={source}']
                if cmd == 'train' else
                [sys.executable, '-m', 'rcae_jax', 'evaluate', '--workdir', str(run)])
        code, rss, secs = peak_rss(argv, work / f'{cmd}{n}_{source}.log')
        row = {'n_train': n, 'n_test': 2 * max(2, n // 4), 'resolution': args.resolution,
               'source': source, 'command': cmd, 'returncode': code,
               'peak_rss_mib': round(rss, 1), 'seconds': round(secs, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
  old = json.loads((work / 'results.json').read_text()) if (work / 'results.json').exists() else []
  key = lambda r: (r['n_train'], r['source'], r['command'])
  new = {key(r) for r in rows}
  keep = [r for r in old if key(r) not in new]  # earlier sizes stay in the table
  rows = sorted(keep + rows, key=lambda r: (r['n_train'], r['source'], r['command'] != 'train'))
  (work / 'results.json').write_text(json.dumps(rows, indent=2) + '\n')
  lines = ['| images (train + test) | source | command | peak RSS (MiB) | seconds |',
           '|---|---|---|---|---|']
  lines += [f"| {r['n_train']} + {r['n_test']} | {r['source']} | {r['command']} | "
            f"{r['peak_rss_mib']:.0f} | {r['seconds']:.0f} |" for r in rows]
  (work / 'results.md').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
