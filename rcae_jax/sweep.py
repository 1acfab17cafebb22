"""Ablation sweeps: a preset expands a base config into named variants; each variant ×
category trains and evaluates in its own directory (finished runs skipped, interrupted ones
resumed, failures recorded), then one table like the paper's."""
import csv
import importlib.util
import io
import pathlib
import re
import shutil
import time
import traceback

import numpy as np

from rcae_jax import config as config_lib
from rcae_jax import data as data_lib
from rcae_jax import evaluate, figures, files, metrics, train

SWEEPS = pathlib.Path(__file__).resolve().parent.parent / 'experiments' / 'sweeps'
CONFIGS = SWEEPS.parent / 'configs'


def load_preset(name):
  """-> {'config': path, 'variants': [(name, [overrides])], 'title': str}."""
  path = pathlib.Path(name)
  if not path.suffix:
    path = SWEEPS / f'{name}.py'
  if not path.is_file():
    known = sorted(p.stem for p in SWEEPS.glob('*.py') if not p.stem.startswith('_'))
    raise config_lib.ConfigError(f'sweep preset {name!r} not found; known presets: {known}')
  spec = importlib.util.spec_from_file_location(f'_sweep_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  preset = module.get_sweep()
  preset.setdefault('title', path.stem)
  cfg = pathlib.Path(preset['config'])
  preset['config'] = cfg if cfg.is_absolute() else CONFIGS / cfg
  return preset


def slug(name):
  return re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_')


def run(preset_name, workdir, overrides=(), categories=None, config=None):
  """config: a config file replacing the preset's base (e.g. experiments/configs/mtd.py)."""
  preset = load_preset(preset_name)
  if config:
    preset['config'] = pathlib.Path(config)
  workdir = pathlib.Path(workdir)
  base = config_lib.load_config(preset['config'], list(overrides))
  # Every variant must be a valid config before anything trains.
  configs = [(name, config_lib.apply_overrides(base, ov)) for name, ov in preset['variants']]
  cats = _categories(base, categories)
  rows = []
  for name, config in configs:
    for cat in cats:
      cfg = config_lib.apply_overrides(config, [f'data.category={cat}'])
      donors = [pathlib.Path(r['dir']) for r in rows
                if r['category'] == cat and not r['status'].startswith('failed')]
      rows.append(_run_one(name, cat, cfg, workdir / slug(name) / slug(cat), donors))
  _write_tables(workdir, preset, rows, cats)
  return rows


def _categories(config, categories):
  if categories in (None, ''):
    return [config.data.category or data_lib.loader.categories(config)[0]]
  if categories == 'all':
    return data_lib.loader.categories(config)
  return [c.strip() for c in categories.split(',') if c.strip()]


# Keys a stage's training never reads: a finished stage of another variant that agrees on
# everything else is the same computation, so it is copied instead of trained again.
_NEVER_READ = ('stages', 'score.', 'eval_batch_size', 'log_every', 'ckpt_every',
               'data.cache_dir')
_NOT_READ = {
    1: _NEVER_READ + ('stage2.', 'stage3.', 'model.dpn_', 'model.crd_', 'anomaly.'),
    2: _NEVER_READ + ('stage3.', 'model.crd_', 'anomaly.'),
}


def _same_for_stage(a, b, stage):
  ignore = _NOT_READ.get(stage, ())
  keys = {k for k in a.keys() | b.keys() if not k.startswith(ignore)}
  return all(a.get(k) == b.get(k) for k in keys)


def _reuse_stages(run_dir, config, donors):
  """Copies stage1..k of the finished donor run that shares the most leading stages."""
  if (run_dir / 'stage1').exists():
    return ''  # started earlier: resume it as it is
  mine = train.flat_config(config)
  best, best_k = None, 0
  for donor in donors:
    theirs = train.flat_config(config_lib.from_json((donor / 'config.json').read_text()))
    k = 0
    for stage in config.stages:
      if stage not in theirs['stages'] or not _same_for_stage(mine, theirs, stage):
        break
      k = stage
    if k > best_k:
      best, best_k = donor, k
  for stage in range(1, best_k + 1):
    shutil.copytree(best / f'stage{stage}', run_dir / f'stage{stage}')
  return f'stage 1-{best_k} from {best}' if best_k else ''


def _run_one(name, cat, config, run_dir, donors=()):
  done = run_dir / 'eval' / 'metrics.json'
  row = {'variant': name, 'category': cat, 'dir': str(run_dir)}
  if done.exists():
    print(f'[sweep] {name} / {cat}: finished earlier, skipped', flush=True)
    result = files.json.loads(done.read_text())
    return {**row, **result['mean'], **_val(result), 'status': 'skipped (done)'}
  print(f'[sweep] {name} / {cat}: training in {run_dir}', flush=True)
  t0 = time.time()
  try:
    reused = _reuse_stages(run_dir, config, donors)
    if reused:
      row['reused'] = reused
      print(f'[sweep] {name} / {cat}: reusing {reused}', flush=True)
    if train.train(config, run_dir) is None:
      raise RuntimeError('training stopped before the last step')
    result = evaluate.evaluate(run_dir)
    (run_dir / 'error.txt').unlink(missing_ok=True)
    return {**row, **result['mean'], **_val(result), 'status': 'ok',
            'seconds': round(time.time() - t0, 1)}
  except Exception as e:  # pylint: disable=broad-except
    files.atomic_write(run_dir / 'error.txt', traceback.format_exc())
    print(f'[sweep] {name} / {cat}: FAILED ({type(e).__name__}: {e}); see {run_dir}/error.txt',
          flush=True)
    return {**row, 'status': f'failed: {type(e).__name__}: {e}'}


def _val(result):
  """Validation metrics (held-out normals + pseudo-anomalies): what model selection may use."""
  return {f'val_{k}': v for k, v in result.get('validation', {}).items()}


def _write_tables(workdir, preset, rows, cats):
  fields = ['variant', 'category', 'status', *metrics.METRICS,
            *[f'val_{m}' for m in metrics.METRICS], 'seconds', 'reused', 'dir']
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=fields, extrasaction='ignore')
  writer.writeheader()
  for r in rows:
    writer.writerow({k: (f'{r[k]:.2f}' if isinstance(r.get(k), float) else r.get(k, ''))
                     for k in fields})
  files.atomic_write(workdir / 'results.csv', buf.getvalue())
  variants = list(dict.fromkeys(r['variant'] for r in rows))
  lines = [f'# {preset["title"]}', '',
           'I-AUROC / P-AUROC / AUPRO in percent, per category and the mean over categories.', '',
           '| variant | ' + ' | '.join(cats) + ' | mean I-AUROC | mean P-AUROC | mean AUPRO | '
           'mean F1-max | mean P-AP |',
           '|---|' + '---|' * (len(cats) + 5)]
  means = {}
  for v in variants:
    by_cat = {r['category']: r for r in rows if r['variant'] == v}
    cells = []
    for c in cats:
      r = by_cat.get(c, {})
      cells.append('/'.join(f'{r[m]:.1f}' for m in ('image_auroc', 'pixel_auroc', 'aupro'))
                   if 'image_auroc' in r else 'failed')
    ok = [r for r in by_cat.values() if 'image_auroc' in r]
    mean = {m: float(np.mean([r[m] for r in ok])) for m in metrics.METRICS} if ok else {}
    means[v] = mean
    cells += [f'{mean[m]:.1f}' if mean else '–' for m in metrics.METRICS]
    lines.append(f'| {v} | ' + ' | '.join(cells) + ' |')
  failed = [r for r in rows if r['status'].startswith('failed')]
  if failed:
    lines += ['', 'Failed runs:'] + [f'- {r["variant"]} / {r["category"]}: {r["status"]}'
                                     for r in failed]
  files.atomic_write(workdir / 'results.md', '\n'.join(lines) + '\n')
  names = [v for v in variants if means[v]]
  if names:
    figures.bars(workdir / 'results.png', names, [means[v]['image_auroc'] for v in names],
                 'mean image AUROC (%)', preset['title'])
  print('\n'.join(lines))
