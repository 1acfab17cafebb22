"""What a trained run is measured by: a list of small evaluators over one shared context.

Each evaluator is a module here with `run(ctx) -> dict | None` that writes its own files
under the run's directory:
  threshold     calibration.json: the decision threshold from held-out normal scores
  validation    validation.json: metrics on held-out normals + planted pseudo-anomalies,
                suppression per depth, border share (model selection; never test labels)
  test_metrics  eval/metrics.json, eval/metrics.md: the field's metrics, per defect type
  pictures      eval/heatmaps.png, eval/sequence_*.png
  dynamics      dynamics/: how R_n and D_n evolve over the recursion steps
The end of `train` runs AFTER_TRAINING, `evaluate` runs ON_TEST, `dynamics` runs DYNAMICS.
Inference outputs are memoised on the context, so evaluators share them.
"""
import dataclasses
import pathlib

import jax
import numpy as np

from rcae_jax import checkpoints, inference, parallel
from rcae_jax import config as config_lib
from rcae_jax import data as data_lib
from rcae_jax.evaluators import dynamics, pictures, test_metrics, threshold, validation

EVALUATORS = {'threshold': threshold.run, 'validation': validation.run,
              'test_metrics': test_metrics.run, 'pictures': pictures.run,
              'dynamics': dynamics.run}

AFTER_TRAINING = ('threshold', 'validation')
ON_TEST = ('validation', 'test_metrics', 'pictures')
DYNAMICS = ('dynamics',)


@dataclasses.dataclass
class Context:
  workdir: pathlib.Path
  config: object
  params: dict
  dataset: object
  write: bool = True  # False: settings overridden; measure but leave the run's files alone
  reuse_saved: bool = False  # take validation.json as written by train when it exists
  # where test results go: 'eval', or 'eval_<overrides>' so scoring a run another way
  # (tiles, another score) never overwrites the run's own results
  eval_name: str = 'eval'
  options: dict = dataclasses.field(default_factory=dict)
  results: dict = dataclasses.field(default_factory=dict)
  _memo: dict = dataclasses.field(default_factory=dict, repr=False)

  def __post_init__(self):
    self.workdir = pathlib.Path(self.workdir)
    # placed on the evaluation mesh once: every inference call below then finds them there
    # instead of copying them from the host per call (validation calls once per batch)
    self.params = parallel.replicate(self.params, inference.default_mesh())

  @property
  def eval_dir(self):
    return self.workdir / self.eval_name

  @property
  def is_main(self):
    return jax.process_index() == 0

  def infer(self, name, images, config=None, with_sequences=False, valid=None):
    """inference.run over `images`, memoised under `name` (e.g. 'test', 'val/rcae'); valid:
    the images' pixels that are not padding (`common.Dataset`'s `*_valid`), or None."""
    key = (name, with_sequences, config_lib.to_json(config or self.config))
    if key not in self._memo:
      self._memo[key] = inference.run(config or self.config, self.params, images,
                                      with_sequences, valid=valid)
    return self._memo[key]

  def stream(self, images, config=None, with_sequences=False, valid=None):
    """inference.batches over `images`: (indices, outputs) one batch at a time."""
    return inference.batches(config or self.config, self.params, images, with_sequences,
                             valid=valid)

  def _scores_key(self, name):
    return ('scores', name, config_lib.to_json(self.config))

  def scores(self, name, images, valid=None):
    """Image scores over `images`, streamed, memoised under `name`."""
    if self._scores_key(name) not in self._memo:
      out = np.empty(len(images))
      for idx, o in self.stream(images, valid=valid):
        out[idx] = o['score']
      self.memoise_scores(name, out)
    return self._memo[self._scores_key(name)]

  def memoise_scores(self, name, scores):
    self._memo[self._scores_key(name)] = scores

  @classmethod
  def of_run(cls, workdir, overrides=(), need_test=True, eval_name='eval', **options):
    """The context of a finished run: its bundle, the data it names (with the test set)."""
    config, params = checkpoints.load_bundle(workdir)
    if overrides:
      config = config_lib.apply_overrides(config, overrides)
    dataset = data_lib.load(config, need_test=need_test)
    return cls(workdir, config, params, dataset, write=not overrides,
               reuse_saved=not overrides, eval_name=eval_name, options=options)


def run(names, ctx):
  """Runs the named evaluators in order; -> {name: result} (also kept in ctx.results)."""
  for name in names:
    ctx.results[name] = EVALUATORS[name](ctx)
  return {name: ctx.results[name] for name in names}
