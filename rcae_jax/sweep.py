"""Ablation sweeps: a preset expands a base config into named variants; each variant ×
category trains and evaluates in its own directory (finished runs skipped, interrupted ones
resumed, failures recorded), then one table like the paper's."""
import copy
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
from rcae_jax import api, figures, files, lock, metrics, runinfo, tables, training
from rcae_jax.evaluators import validation


def load_preset(name):
  """-> {'config': path, 'variants': [(name, [overrides])], 'title': str}."""
  sweeps = config_lib.experiments_dir() / 'sweeps'
  path = pathlib.Path(name)
  if not path.suffix:
    path = sweeps / f'{name}.py'
  if not path.is_file():
    known = sorted(p.stem for p in sweeps.glob('*.py') if not p.stem.startswith('_'))
    raise config_lib.ConfigError(f'sweep preset {name!r} not found; known presets: {known}')
  spec = importlib.util.spec_from_file_location(f'_sweep_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  preset = module.get_sweep()
  preset.setdefault('title', path.stem)
  cfg = pathlib.Path(preset['config'])
  preset['config'] = cfg if cfg.is_absolute() else config_lib.experiments_dir() / 'configs' / cfg
  return preset


def slug(name):
  return re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_')


def run(preset_name, workdir, overrides=(), categories=None, config=None,
        validation_only=False, seeds=None):
  """config: a config file replacing the preset's base (e.g. experiments/configs/mtd.py).

  validation_only: train and validate, never read the test set (choosing among variants).
  seeds: model seeds (`seed`) per variant, each in <variant>/seed<S>/; the tables give the
  mean and the spread (standard deviation) over seeds. The data split stays `data.seed`'s.
  """
  with lock.hold(workdir, 'sweep'):
    return _run(preset_name, pathlib.Path(workdir), overrides, categories, config,
                validation_only, seeds)


def _run(preset_name, workdir, overrides, categories, config, validation_only, seeds):
  preset = load_preset(preset_name)
  if config:
    preset['config'] = pathlib.Path(config)
  base = config_lib.load_config(preset['config'], list(overrides))
  # Every variant must be a valid config before anything trains.
  configs = expand(preset, base)
  cats = _categories(base, categories)
  rows = []
  for name, config in configs:
    for seed in seeds or [None]:
      for cat in cats:
        cfg = config_lib.apply_overrides(
            config, [f'data.category={cat}'] + ([] if seed is None else [f'seed={seed}']))
        run_dir = workdir / slug(name) / ('' if seed is None else f'seed{seed}') / slug(cat)
        donors = [pathlib.Path(r['dir']) for r in rows
                  if r['category'] == cat and not r['status'].startswith('failed')]
        row = _run_one(name, cat, cfg, run_dir, donors, validation_only)
        rows.append({**row, 'seed': cfg.seed})
  _write_tables(workdir, preset, rows, cats, validation_only)
  return rows


def expand(preset, base):
  """-> [(name, config)]: each variant is a list of 'key=value' overrides of the base config,
  or a function config -> config (given a copy; e.g. `experiments/configs/fae.to_fae`)."""
  out = []
  for name, variant in preset['variants']:
    if callable(variant):
      config = config_lib.validate(variant(copy.deepcopy(base)))
    else:
      config = config_lib.apply_overrides(base, variant)
    out.append((name, config))
  return out


def _categories(config, categories):
  if categories in (None, ''):
    return [config.data.category or data_lib.loader.categories(config)[0]]
  if categories == 'all':
    return data_lib.loader.categories(config)
  return [c.strip() for c in categories.split(',') if c.strip()]


def _reuse_stages(run_dir, config, donors):
  """Copies stage1..k of the finished donor run that shares the most leading stages: a stage
  whose keys agree (`config.same_run(..., for_stage=k)`, from what the stage declares it
  reads) is the same computation, so it is copied instead of trained again."""
  if (run_dir / 'stage1').exists():
    return ''  # started earlier: resume it as it is
  mine = config_lib.flat(config)
  best, best_k = None, 0
  for donor in donors:
    theirs = config_lib.flat(config_lib.saved(files.read_json(donor / 'config.json')))
    k = 0
    for stage in config.stages:
      if stage != k + 1 or stage not in theirs['stages'] or not config_lib.same_run(
          mine, theirs, for_stage=stage):
        break
      k = stage
    if k > best_k:
      best, best_k = donor, k
  for stage in range(1, best_k + 1):
    shutil.copytree(best / f'stage{stage}', run_dir / f'stage{stage}')
  return f'stage 1-{best_k} from {best}' if best_k else ''


def _check_finished(run_dir, config):
  """A finished run is reported under a row only if it ran that row's config
  (`config.run_diff`): a preset edited since would otherwise label old numbers with the new
  meaning."""
  diff = config_lib.run_diff(
      config_lib.flat(config_lib.saved(files.read_json(run_dir / 'config.json'))),
      config_lib.flat(config))
  if diff:
    raise config_lib.ConfigError(
        f'{run_dir} finished with another config than this row\'s ({", ".join(diff[:6])}'
        f'{" ..." if len(diff) > 6 else ""}): the preset changed since; use a new --workdir')


def _run_one(name, cat, config, run_dir, donors=(), validation_only=False):
  done = run_dir / ('validation.json' if validation_only else 'eval/metrics.json')
  row = {'variant': name, 'category': cat, 'dir': str(run_dir)}
  t0 = time.time()
  try:
    if done.exists() and (validation_only or (run_dir / 'validation.json').exists()):
      _check_finished(run_dir, config)
      print(f'[sweep] {name} / {cat}: finished earlier, skipped', flush=True)
      return {**row, **_results(run_dir, validation_only), 'status': 'skipped (done)'}
    print(f'[sweep] {name} / {cat}: training in {run_dir}', flush=True)
    reused = _reuse_stages(run_dir, config, donors)
    if reused:
      row['reused'] = reused
      print(f'[sweep] {name} / {cat}: reusing {reused}', flush=True)
    if training.train(config, run_dir) is None:
      raise RuntimeError('training stopped before the last step')
    if not validation_only:
      api.evaluate(run_dir)
    (run_dir / 'error.txt').unlink(missing_ok=True)
    return {**row, **_results(run_dir, validation_only), 'status': 'ok',
            'seconds': round(time.time() - t0, 1)}
  except Exception as e:  # pylint: disable=broad-except
    files.atomic_write(run_dir / 'error.txt', traceback.format_exc())
    print(f'[sweep] {name} / {cat}: FAILED ({type(e).__name__}: {e}); see {run_dir}/error.txt',
          flush=True)
    return {**row, 'status': f'failed: {type(e).__name__}: {e}'}


def _results(run_dir, validation_only):
  """Test means (unless validation_only) and the validation columns of one finished run."""
  out = {}
  if not validation_only:
    mean = files.read_json(run_dir / 'eval' / 'metrics.json')['mean']
    out.update({k: mean[k] for k in metrics.METRICS})  # not the histogram bounds
  val = files.read_json(run_dir / 'validation.json')
  out.update({f'val_{k}': val['metrics'][k] for k in metrics.METRICS})
  supp = val.get('suppression', {})
  if 'border_share' in val:
    out['val_border_share'] = float(np.mean(val['border_share']))
  for name in ('R', 'D'):
    if f'residual_{name}' in supp:
      out[f'val_residual_{name}_first'] = supp[f'residual_{name}'][0]
      out[f'val_residual_{name}_last'] = supp[f'residual_{name}'][-1]
      out[f'val_normal_error_{name}_last'] = supp[f'normal_error_{name}'][-1]
  if 'recon_image_auroc' in supp:
    out['val_recon_image_auroc'] = supp['recon_image_auroc']
    out['val_recon_pixel_auroc'] = supp['recon_pixel_auroc']
  if 'normal_gap' in val:
    out['val_gap_ratio_p99'] = val['normal_gap']['ratio_p99']
    out['val_gap_ks'] = val['normal_gap']['ks']
  if 'crossfit_infer' in val:  # a cross-fitted run, scored with the fold models averaged
    out['val_folds_image_auroc'] = val['crossfit_infer']['folds']['image_auroc']
    out['val_folds_aupro'] = val['crossfit_infer']['folds']['aupro']
  if 'holdout' in val:
    out['val_holdout_image_auroc'] = val['holdout']['metrics']['image_auroc']
    out['val_holdout_aupro'] = val['holdout']['metrics']['aupro']
  for i, m in enumerate(val.get('score_choices', {}).values()):
    out[f'val_score{i}_image_auroc'] = m['image_auroc']
  return out


def _code_line(rows):
  """Which code trained the rows' runs (their env.json) and wrote this table."""
  trained = {}
  for r in rows:
    env = pathlib.Path(r['dir']) / 'env.json'
    code = files.read_json(env).get('code') if env.exists() else None
    trained.setdefault(runinfo.describe(code), []).append(r['variant'])
  parts = [f'{k} ({len(v)} run(s))' for k, v in trained.items()]
  return (f'Code: runs trained by {"; ".join(parts) or "–"}; table written by '
          f'{runinfo.describe(runinfo.code_version())}.')


def _seed_means(rows, columns):
  """{column: [mean over categories, one per seed]} over the rows that have the column."""
  out = {}
  for col in columns:
    per_seed = {}
    for r in rows:
      if isinstance(r.get(col), (int, float)) and np.isfinite(r[col]):
        per_seed.setdefault(r['seed'], []).append(r[col])
    if per_seed:
      out[col] = [float(np.mean(v)) for v in per_seed.values()]
  return out


def _cell(values, scale=1, digits=1):
  """'61.4' for one value, '61.4 ± 1.2' (std over seeds) for several, '–' for none."""
  if not len(values):
    return '–'
  v = np.asarray(values) * scale
  return f'{v.mean():.{digits}f}' + (f' ± {v.std():.{digits}f}' if len(v) > 1 else '')


SUPPRESSION_COLUMNS = ('val_residual_R_first', 'val_residual_R_last', 'val_residual_D_last',
                       'val_normal_error_R_last', 'val_normal_error_D_last',
                       'val_recon_image_auroc', 'val_recon_pixel_auroc')
CHOICE_COLUMNS = ('val_image_auroc', 'val_aupro', 'val_border_share', 'val_gap_ratio_p99',
                  'val_gap_ks', 'val_folds_image_auroc', 'val_folds_aupro',
                  'val_holdout_image_auroc', 'val_holdout_aupro',
                  *[f'val_score{i}_image_auroc' for i in range(len(validation.SCORE_CHOICES))])


def _write_tables(workdir, preset, rows, cats, validation_only=False):
  fields = ['variant', 'seed', 'category', 'status', *metrics.METRICS,
            *[f'val_{m}' for m in metrics.METRICS], *SUPPRESSION_COLUMNS,
            *CHOICE_COLUMNS[2:], 'seconds', 'reused',
            'dir']
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=fields, extrasaction='ignore')
  writer.writeheader()
  for r in rows:
    writer.writerow({k: (f'{r[k]:.4f}' if isinstance(r.get(k), float) else r.get(k, ''))
                     for k in fields})
  files.atomic_write(workdir / 'results.csv', buf.getvalue())
  if validation_only:  # the table shows the validation columns in the metrics' places
    rows = [{**r, **{m: r[f'val_{m}'] for m in metrics.METRICS if f'val_{m}' in r}}
            for r in rows]
  what = ('VALIDATION (held-out normals + pseudo-anomalies; the test set was not read)'
          if validation_only else 'test')
  variants = list(dict.fromkeys(r['variant'] for r in rows))
  n_seeds = len({r['seed'] for r in rows})
  spread = ' (mean ± std over seeds)' if n_seeds > 1 else ''
  means, main_rows, supp_rows, choice_rows = {}, [], [], []
  for v in variants:
    mine = [r for r in rows if r['variant'] == v]
    cells = []
    for c in cats:
      per_seed = [r for r in mine if r['category'] == c and 'image_auroc' in r]
      cells.append('/'.join(_cell([r[m] for r in per_seed])
                            for m in ('image_auroc', 'pixel_auroc', 'aupro'))
                   if per_seed else 'failed')
    by_seed = _seed_means(mine, metrics.METRICS + SUPPRESSION_COLUMNS + CHOICE_COLUMNS)
    means[v] = {m: float(np.mean(x)) for m, x in by_seed.items()}
    main_rows.append([v, *cells, *[_cell(by_seed.get(m, [])) for m in metrics.METRICS]])
    supp_rows.append([v, *[_cell(by_seed.get(m, []), scale=1 if 'auroc' in m else 100)
                           for m in SUPPRESSION_COLUMNS]])
    choice_rows.append([v, *[_cell(by_seed.get(m, []), scale=100 if 'border' in m else 1,
                                   digits=2 if 'gap' in m else 1)
                             for m in CHOICE_COLUMNS]])
  lines = [f'# {preset["title"]}', '', _code_line(rows), '',
           f'{what}: I-AUROC / P-AUROC / AUPRO in percent, per category and the mean over '
           f'categories{spread}; {n_seeds} seed(s).', '',
           tables.markdown(['variant', *cats, 'mean I-AUROC', 'mean P-AUROC', 'mean AUPRO',
                            'mean F1-max', 'mean P-AP'], main_rows), '',
           'Suppression of planted defects on validation (residual = share of the defect '
           'still in the reconstruction, %; normal error = mean |R − x| on normal pixels, '
           '% of the range; recon = the reconstruction-error map alone as the detector):', '',
           tables.markdown(['variant', 'residual R_1', 'residual R_N', 'residual D_N',
                            'normal error R_N', 'normal error D_N', 'recon val I-AUROC',
                            'recon val P-AUROC'], supp_rows), '',
           'Validation, for choosing (never the test set): the detector\'s I-AUROC and AUPRO, '
           'the share (%) of normal maps peaking within 8 px of the border, the normal gap '
           '(held-out / training normals\' 99th-percentile image score, and the KS statistic of '
           'the two score sets: 1 and 0 when the detector judges both alike), a cross-fitted '
           'run\'s metrics with its fold models averaged (`crossfit.infer=folds`; – when not '
           'cross-fitted), the same metrics '
           'on the pseudo-anomaly families the CRD never saw (`crd_anomaly.holdout`; – when '
           'none), and I-AUROC under each image score / smoothing:', '',
           tables.markdown(['variant', 'val I-AUROC', 'val AUPRO', 'border share %',
                            'normal gap p99 ratio', 'normal gap KS',
                            'fold models I-AUROC', 'fold models AUPRO',
                            'held-out families I-AUROC', 'held-out families AUPRO',
                            *[f'I-AUROC, {name}' for name in validation.SCORE_CHOICES]],
                           choice_rows)]
  failed = [r for r in rows if r['status'].startswith('failed')]
  if failed:
    lines += ['', 'Failed runs:'] + [f'- {r["variant"]} / {r["category"]}: {r["status"]}'
                                     for r in failed]
  files.atomic_write(workdir / 'results.md', '\n'.join(lines) + '\n')
  names = [v for v in variants if 'image_auroc' in means[v]]
  if names:
    figures.bars(workdir / 'results.png', names, [means[v]['image_auroc'] for v in names],
                 'mean image AUROC (%)', preset['title'])
  print('\n'.join(lines))
