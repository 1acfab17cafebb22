"""How much better a finished run reconstructs its training normals than unseen ones.

The leak between the stages (issue 32): stages 1-2 are fitted on the images the CRD then
learns from, so if those are reconstructed better than images seen later, the CRD learns
what a *seen* image's reconstruction looks like. This measures, per recursion step n, on
training normals (evenly spaced, --train of them) and the held-out normals:

  rcae_abs     mean |R_n - x| (the RcAE's reconstruction)
  dpn_abs      mean |D_n - x| (what the CRD reads, after the DPN), when stage 2 is trained
  dpn_std      the per-image std of D_n - x, averaged over the images

and the ratio held-out / train of each. `stage3.recon_noise` was sized from dpn_std
(experiments/sweeps/recon_noise.py).

  python experiments/recon_gap.py runs/mtd_s0 [--train 200]

Writes <run>/recon_gap.json (atomically) and prints a table. Never reads the test set.
Kept-aspect runs (`data.resize=keep`) are measured over the image pixels, not the padding.
"""
import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rcae_jax import checkpoints, evaluators, files, inference, tables  # pylint: disable=wrong-import-position
from rcae_jax.evaluators import validation  # pylint: disable=wrong-import-position

QUANTITIES = ('rcae_abs', 'dpn_abs', 'dpn_std')


def errors(images, recon, enhanced=None, valid=None):
  """{quantity: (S, B) per step and image} of uint8 images (B, H, W, C) and sequences
  (S, B, H, W, C) in [0, 1]; valid: bool (B, H, W) pixels to count, or None (all)."""
  x = images.astype(np.float32)[None] / 255.0
  w = (np.ones(images.shape[:3], bool) if valid is None else np.asarray(valid, bool))
  w = np.broadcast_to(w[None, ..., None], (1,) + images.shape).astype(np.float64)
  count = w.sum(axis=(2, 3, 4))

  def mean(a):
    return (a * w).sum(axis=(2, 3, 4)) / count

  out = {'rcae_abs': mean(np.abs(recon - x))}
  if enhanced is not None:
    d = enhanced - x
    out['dpn_abs'] = mean(np.abs(d))
    out['dpn_std'] = np.sqrt(np.maximum(mean(d * d) - mean(d) ** 2, 0))
  return out


def measure(run_dir, n_train=200):
  """-> {'steps': N, 'train': {q: [per step]}, 'held_out': {...}, 'ratio': {...}}."""
  ctx = evaluators.Context.of_run(run_dir, need_test=False)
  ds = ctx.dataset
  pick = validation.evenly_spaced(len(ds.train), n_train)  # as `normal_gap` picks them
  sets = {'train': (np.asarray(ds.train[pick]), validation.subset(ds.train_valid, pick)),
          'held_out': (np.asarray(ds.val), ds.val_valid)}
  if not len(sets['held_out'][0]):
    raise ValueError(f'{run_dir}: the run holds out no normal images (data.val_fraction=0)')
  result = {}
  for name, (images, valid) in sets.items():
    parts = {}
    for idx, out in inference.batches(ctx.config, ctx.params, images, with_sequences=True):
      got = errors(images[idx], out['recon'], out.get('enhanced'),
                   None if valid is None else np.asarray(valid[idx]))
      for q, v in got.items():
        parts.setdefault(q, []).append(v)
    result[name] = {q: np.concatenate(v, axis=1).mean(axis=1).tolist() for q, v in parts.items()}
    result[name]['n_images'] = len(images)
  result['ratio'] = {q: [h / t for h, t in zip(result['held_out'][q], result['train'][q])]
                     for q in QUANTITIES if q in result['train']}
  result['steps'] = len(result['train']['rcae_abs'])
  return result


def write(run_dir, result):
  files.write_json(pathlib.Path(run_dir) / 'recon_gap.json', result)
  head = ['quantity'] + [f'n = {n + 1}' for n in range(result['steps'])]
  rows = []
  for q in result['ratio']:
    for s in ('train', 'held_out'):
      rows.append([f'{q} ({s})'] + [f'{v:.4f}' for v in result[s][q]])
    rows.append([f'{q} held-out / train'] + [f'{v:.2f}' for v in result['ratio'][q]])
  return (f'{result["train"]["n_images"]} training normals, {result["held_out"]["n_images"]} '
          'held-out normals\n\n' + tables.markdown(head, rows))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('run', type=pathlib.Path, help='a finished run (its model/ bundle)')
  parser.add_argument('--train', type=int, default=200,
                      help='training normals measured (evenly spaced; default 200)')
  args = parser.parse_args(argv)
  if args.train < 1:
    parser.error(f'--train must be at least 1, got {args.train}')
  try:
    result = measure(args.run, args.train)
  except (checkpoints.BundleError, ValueError) as e:
    raise SystemExit(str(e)) from None
  print(write(args.run, result))


if __name__ == '__main__':
  main()
