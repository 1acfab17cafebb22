"""Scores a trained run's test set: metrics.json, a markdown table and pictures."""
import pathlib

import numpy as np

from rcae_jax import config as config_lib
from rcae_jax import data as data_lib
from rcae_jax import calibration, figures, files, inference, metrics, runinfo


def markdown_table(rows, columns=metrics.METRICS, first='category'):
  """rows: {name: {metric: value}} -> markdown, percent with one decimal."""
  head = f'| {first} | ' + ' | '.join(columns) + ' |'
  sep = '|' + '---|' * (len(columns) + 1)
  body = [f'| {name} | ' + ' | '.join(
      f'{m[c]:.1f}' if isinstance(m.get(c), (int, float)) else str(m.get(c, '–'))
      for c in columns) + ' |' for name, m in rows.items()]
  return '\n'.join([head, sep] + body)


def per_defect(scores, maps, labels, masks, defects):
  """Normal test images + one defect type at a time (MTD's blowhole, crack, ...)."""
  kinds = sorted({d for d, l in zip(defects, labels) if l})
  if len(kinds) < 2:
    return {}
  defects = np.array(defects)
  out = {}
  for kind in kinds:
    sel = (labels == 0) | (defects == kind)
    out[kind] = metrics.compute_metrics(scores[sel], labels[sel], maps[sel], masks[sel])
  return out


def evaluate(workdir, overrides=(), n_pictures=8):
  """-> {'per_category', 'mean', 'per_defect'}; writes <workdir>/eval/."""
  workdir = pathlib.Path(workdir)
  config, params = runinfo.load_bundle(workdir)
  if overrides:
    config = config_lib.apply_overrides(config, overrides)
  ds = data_lib.load(config, need_test=True)
  out = inference.run(config, params, ds.test)
  scores, maps = out['score'], out['map']
  cat_metrics = metrics.compute_metrics(scores, ds.test_labels, maps, ds.test_masks)
  result = {'per_category': {ds.category: cat_metrics}, 'mean': cat_metrics,
            'per_defect': {ds.category: per_defect(scores, maps, ds.test_labels,
                                                   ds.test_masks, ds.test_defects)},
            'n_test': int(len(ds.test)), 'n_anomalous': int(ds.test_labels.sum())}
  val_path = workdir / 'validation.json'  # written by train; older runs get it here
  val = (files.json.loads(val_path.read_text()) if val_path.exists() and not overrides
         else calibration.validate(workdir, config, params, ds.val, write=not overrides))
  if val:
    result['validation'] = val['metrics']
  eval_dir = workdir / 'eval'
  files.write_json(eval_dir / 'metrics.json', result)
  table = markdown_table(result['per_category'])
  if result['per_defect'][ds.category]:
    table += '\n\nPer defect type (normal test images + that type):\n\n' + markdown_table(
        result['per_defect'][ds.category], first='defect')
  files.atomic_write(eval_dir / 'metrics.md', table + '\n')
  _pictures(eval_dir, config, params, ds, scores, maps, n_pictures)
  return result


def _pictures(eval_dir, config, params, ds, scores, maps, n):
  """Most and least anomalous test images of each label, and their recursion strips."""
  labels = ds.test_labels
  order = np.argsort(scores)
  bad = [i for i in order[::-1] if labels[i]][: n // 2]
  missed = [i for i in order if labels[i]][: max(1, n // 4)]
  good = [i for i in order[::-1] if not labels[i]][: max(1, n // 4)]
  pick = list(dict.fromkeys(bad + missed + good))
  names = ['/'.join(pathlib.Path(ds.test_names[i]).parts[-3:])
           for i in pick]
  vmax = float(np.quantile(maps, 0.999))
  figures.heatmaps(eval_dir / 'heatmaps.png', ds.test[pick], ds.test_masks[pick], maps[pick],
                   scores[pick], names, vmax=vmax)
  seq = inference.run(config, params, ds.test[pick[:4]], with_sequences=True)
  for j, i in enumerate(pick[:4]):
    figures.sequence_strip(eval_dir / f'sequence_{j}.png', ds.test[i],
                           seq['recon'][:, j], seq['enhanced'][:, j] if 'enhanced' in seq else None,
                           names[j])
