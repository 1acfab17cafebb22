"""Seen vs held-out pseudo-anomaly families, from a finished `sweep generalisation`.

For each held-out group of families, two detectors scored on the same validation set (the
held-out normals + one anomaly drawn from that group only): the one trained *without* the
group (its validation.json 'holdout') and the one trained on *every* family (the sweep's
'all families' row, scored here). The difference is what the CRD loses on a defect kind its
generator never draws: the number to choose detector designs by.

  python experiments/family_gap.py runs/gen

Reads every seed the sweep trained; writes <workdir>/family_gap.json and family_gap.md
(atomically). Never reads the test set.
"""
import argparse
import importlib.util
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rcae_jax import evaluators, files, inference, sweep, tables  # pylint: disable=wrong-import-position
from rcae_jax.evaluators import validation  # pylint: disable=wrong-import-position

METRICS = ('image_auroc', 'pixel_auroc', 'aupro')


def groups():
  spec = importlib.util.spec_from_file_location(
      '_generalisation', ROOT / 'experiments' / 'sweeps' / 'generalisation.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.GROUPS


def seen(run_dir, families):
  """Metrics of a finished run on the validation set drawn from `families` alone."""
  ctx = evaluators.Context.of_run(run_dir, need_test=False)
  cfg, val = ctx.config, ctx.dataset.val
  scored = validation._Scored(2 * len(val), cfg.get('eval_pixel_bits', 0))  # pylint: disable=protected-access
  for idx, images, masks, _ in validation.validation_batches(cfg, val, cfg.data.seed, families):
    scored.add(idx, inference.run(cfg, ctx.params, images), masks)
  return {k: float(v) for k, v in scored.metrics().items() if k in METRICS}


def runs_of(variant_dir):
  """{seed: run dir} of one variant (<variant>/seed<S>/<category>/ with a finished model)."""
  out = {}
  for seed_dir in sorted(variant_dir.glob('seed*')):
    for run in sorted(seed_dir.iterdir()):
      if (run / 'model').is_dir() and (run / 'validation.json').exists():
        out[seed_dir.name] = run
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('workdir', type=pathlib.Path, help='the generalisation sweep workdir')
  args = parser.parse_args(argv)
  all_runs = runs_of(args.workdir / sweep.slug('all families'))
  if not all_runs:
    raise SystemExit(f'{args.workdir}: no finished "all families" run (run `sweep '
                     'generalisation` first)')
  result = {}
  for name, families in groups():
    held_runs = runs_of(args.workdir / sweep.slug(f'without {name}'))
    seeds = sorted(set(all_runs) & set(held_runs))
    if not seeds:
      print(f'{name}: no finished "without {name}" run with a matching seed; skipped')
      continue
    row = {'families': list(families), 'seeds': seeds, 'seen': [], 'held_out': []}
    for s in seeds:
      held = files.read_json(held_runs[s] / 'validation.json')['holdout']
      assert tuple(held['families']) == tuple(families), (held_runs[s], held['families'])
      row['held_out'].append({k: held['metrics'][k] for k in METRICS})
      row['seen'].append(seen(all_runs[s], families))
      print(f'{name} {s}: seen {row["seen"][-1]}, held out {row["held_out"][-1]}', flush=True)
    result[name] = row
  files.write_json(args.workdir / 'family_gap.json', result)
  cells = lambda rows, k: _mean_std([r[k] for r in rows])
  table = tables.markdown(
      ['held-out group', 'families', 'seeds', 'I-AUROC seen', 'I-AUROC held out',
       'AUPRO seen', 'AUPRO held out'],
      [[name, ', '.join(r['families']), len(r['seeds']),
        cells(r['seen'], 'image_auroc'), cells(r['held_out'], 'image_auroc'),
        cells(r['seen'], 'aupro'), cells(r['held_out'], 'aupro')] for name, r in result.items()])
  files.atomic_write(args.workdir / 'family_gap.md', table + '\n')
  print(table)


def _mean_std(values):
  values = np.asarray(values, float)
  if len(values) < 2:
    return f'{values.mean():.1f}'
  return f'{values.mean():.1f} ± {values.std():.1f}'


if __name__ == '__main__':
  main()
