"""Methods as declarations: what a method trains, in which order, from which config keys,
and how its trained networks become an anomaly map.

A method is one file here (`rcae.py`, `fae.py`) that builds a `Method` and `register`s it.
The generic code (`train`, `sweep`, `config.validate`, `config.same_run`, the evaluators,
`model`, `bench`) reads only these declarations: none of it names a method or a stage.

A run's `config.stages` picks stages by their 1-based position in `Method.stages`; a stage
runs only after every stage that trains a network it reads (`Stage.reads`). Checkpoints of
stage k live in `<workdir>/stage<k>/`.
"""
import dataclasses
from typing import Any, Callable, Optional


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training stage.

  net: the network it trains (its params' key in the model bundle).
  group: its config group, holding at least steps, epochs, lr, schedule, flip and jitter.
  objective(model, config, variant, axis_name) -> fn(params, frozen, batch, rng) ->
    (loss, metrics): its loss on one device's examples; `frozen` holds the params of the
    networks in `reads` and, when it draws pseudo-anomalies, the texture bank 'textures'.
  reads: earlier networks it reads, frozen.
  keys: config keys it reads besides its group (a prefix ends in '.' or '_'); what
    `config.same_run(..., for_stage=k)` compares, with the keys of the stages it reads.
  anomalies(config) -> the config group of its pseudo-anomalies, or None if it draws none.
  variant(config, step) -> a static per-step choice (RcAE's depth n), compiled one program
    per value; `variants(config)` lists them, the costliest last (`bench`).
  source: the score source its network adds (`score.source`), or None.
  reconstructs: its source is a reconstruction scored by a discrepancy (the validation's
    reconstruction-error detector and suppression read the last such stage).
  """
  net: str
  group: str
  objective: Callable[..., Callable]
  reads: tuple = ()
  keys: tuple = ()
  anomalies: Callable[[Any], Optional[str]] = lambda config: None
  variant: Callable[[Any, int], Any] = lambda config, step: None
  variants: Callable[[Any], tuple] = lambda config: (None,)
  source: Optional[str] = None
  reconstructs: bool = False


@dataclasses.dataclass(frozen=True)
class Method:
  """name: config.method's value. stages: its Stage list, in training order.
  build(config) -> the model: `init(net, rng)`, `raw_map(params, x, source,
    with_sequences)` and `image_shape` (`rcae_jax.model` caches it per config).
  keys: config keys every stage reads (besides `COMMON_KEYS`).
  defaults() -> {group: ConfigDict}: config groups the method adds to the base config.
  validate(config, need): its own rules; need(cond, message) raises a ConfigError.
  legacy(saved) -> {group: {key: value}}: for a config.json saved before a key existed, the
    value that keeps what that run did where today's default differs (`config.saved`).
  """
  name: str
  stages: tuple
  build: Callable[[Any], Any]
  keys: tuple = ()
  defaults: Callable[[], dict] = dict
  validate: Callable[[Any, Callable], None] = lambda config, need: None
  legacy: Callable[[dict], dict] = lambda saved: {}


# Read by every stage of every method.
COMMON_KEYS = ('seed', 'method', 'data.', 'batch_size', 'grad_weight', 'model.dtype')
# Read after training only: how maps are scored and which stages make up the model.
EVAL_KEYS = ('score.', 'stages', 'eval_pixel_bits', 'crossfit.infer', 'infer.')
# Read by every stage that reads another's network: with cross-fitting such a stage trains on
# out-of-fold outputs (rcae_jax/crossfit.py).
CROSSFIT_KEYS = ('crossfit.folds',)
# Change no computation, only how a run is logged, saved, fed or where its data lies.
BOOKKEEPING = ('log_every', 'log.tensorboard', 'ckpt_every', 'eval_batch_size',
               'data.cache_dir', 'data.root', 'data.prepared_dir', 'data.read_threads')
# Read on the host only, never inside a compiled program: with BOOKKEEPING and every group's
# `steps` and `epochs` (a stage's length), left out of the key compiled programs are cached
# under (`config.program_json`), so runs differing only in them trace and compile once.
HOST_ONLY = BOOKKEEPING + ('data.name', 'data.category', 'data.source', 'data.val_fraction',
                           'data.train_fraction', 'data.resize')
LENGTH_KEYS = ('steps', 'epochs')

_REGISTRY = {}


def register(method):
  """Adds a method (by `method.name`); registering a name again replaces it."""
  _REGISTRY[method.name] = method
  return method


def unregister(name):
  """Removes a registered method (a test's or a notebook's); shipped ones stay importable."""
  _REGISTRY.pop(name, None)


def names():
  return tuple(_REGISTRY)


def get(name):
  if name not in _REGISTRY:
    raise KeyError(f'unknown method {name!r}; registered: {sorted(_REGISTRY)}')
  return _REGISTRY[name]


def of(config):
  """The method of a config ('rcae' when the config predates the key)."""
  return get(config.get('method', 'rcae'))


def active(config):
  """[(k, Stage)] of the stages a config trains, k 1-based."""
  method = of(config)
  return [(k, method.stages[k - 1]) for k in config.stages]


def stage(config, k):
  return of(config).stages[k - 1]


def defaults():
  """{group: ConfigDict} of every registered method's own config groups."""
  out = {}
  for method in _REGISTRY.values():
    out.update(method.defaults())
  return out


def score_sources():
  """Every score source a registered method declares."""
  return tuple(dict.fromkeys(s.source for m in _REGISTRY.values() for s in m.stages if s.source))


def score_source(config):
  """The stage network that scores images: score.source, or with 'auto' the last trained
  stage's."""
  if config.score.source != 'auto':
    return config.score.source
  return [s.source for _, s in active(config) if s.source][-1]


def recon_source(config):
  """The reconstruction a no-detector baseline scores: the last trained stage that
  reconstructs (RcAE: D_n with a DPN, else R_n; FAE: its restoration), or None."""
  found = [s.source for _, s in active(config) if s.reconstructs]
  return found[-1] if found else None


def holdout(config):
  """Pseudo-anomaly families some trained stage never saw (`<group>.holdout`)."""
  out = []
  for _, s in active(config):
    group = s.anomalies(config)
    if group:
      out += [f for f in config[group].get('holdout', ()) if f not in out]
  return tuple(out)


def matches(key, patterns):
  """Whether a flat config key is one of `patterns` or under one (a prefix ends in . or _)."""
  return any(key == p or (p[-1] in '._' and key.startswith(p)) for p in patterns)


def stage_keys(method, k):
  """The config keys stage k's computation reads: its group, its keys, the method's, and
  those of every stage whose network it reads (transitively)."""
  s = method.stages[k - 1]
  keys = [f'{s.group}.', *s.keys, *method.keys, *COMMON_KEYS,
          *(CROSSFIT_KEYS if s.reads else ())]
  for net in s.reads:
    j = next(j for j, t in enumerate(method.stages, 1) if t.net == net)
    keys += stage_keys(method, j)
  return tuple(dict.fromkeys(keys))


def read_by_any(key):
  """Whether any stage of any registered method declares it reads `key`."""
  return any(matches(key, stage_keys(m, k)) for m in _REGISTRY.values()
             for k in range(1, len(m.stages) + 1))


# The shipped methods register themselves on import.
from rcae_jax.methods import fae, rcae  # noqa: E402,F401  pylint: disable=g-import-not-at-top
