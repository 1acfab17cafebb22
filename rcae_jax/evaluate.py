"""`python -m rcae_jax evaluate`: a finished run's test set through the ON_TEST evaluators
(validation, test metrics, pictures)."""
from rcae_jax import evaluators, lock


def evaluate(workdir, overrides=(), n_pictures=8):
  """-> eval/metrics.json's content. With overrides (e.g. another --data), the run's own
  validation.json and calibration are left as they are."""
  with lock.hold(workdir, 'evaluate', create=False):
    ctx = evaluators.Context.of_run(workdir, overrides, need_test=True, n_pictures=n_pictures)
    return evaluators.run(evaluators.ON_TEST, ctx)['test_metrics']
