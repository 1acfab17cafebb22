"""The field's metrics on the test set (I-AUROC, P-AUROC, AUPRO, F1-max, pixel AP), for the
category and per defect type: eval/metrics.json and eval/metrics.md."""
import numpy as np

from rcae_jax import files, metrics, tables


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


def run(ctx):
  """-> {'per_category', 'mean', 'per_defect', 'n_test', 'n_anomalous'[, 'validation']}."""
  ds = ctx.dataset
  out = ctx.infer('test', ds.test)
  scores, maps = out['score'], out['map']
  cat_metrics = metrics.compute_metrics(scores, ds.test_labels, maps, ds.test_masks)
  defects = per_defect(scores, maps, ds.test_labels, ds.test_masks, ds.test_defects)
  result = {'per_category': {ds.category: cat_metrics}, 'mean': cat_metrics,
            'per_defect': {ds.category: defects},
            'n_test': int(len(ds.test)), 'n_anomalous': int(ds.test_labels.sum())}
  if ctx.results.get('validation'):
    result['validation'] = ctx.results['validation']['metrics']
  if ctx.is_main:
    eval_dir = ctx.workdir / 'eval'
    files.write_json(eval_dir / 'metrics.json', result)
    table = tables.metrics_table(result['per_category'], metrics.METRICS)
    if defects:
      table += ('\n\nPer defect type (normal test images + that type):\n\n'
                + tables.metrics_table(defects, metrics.METRICS, first='defect'))
    files.atomic_write(eval_dir / 'metrics.md', table + '\n')
  return result
