"""Configs are code: `path/to/config.py[:arg]` + `key=value` overrides, validated up front."""
import ast
import importlib.util
import json
import pathlib
import sys

import ml_collections

from rcae_jax import augment, files


class ConfigError(ValueError):
  """A config file, key or value the platform refuses; the message names it."""


def experiments_dir():
  """The shipped `experiments/` (configs, sweep presets): beside the package in a clone or an
  editable install, else the `experiments` package that `pip install .` put on the path.
  The only place the platform looks for it; config files import `experiments.configs.base`,
  so its parent goes on sys.path once."""
  beside = pathlib.Path(__file__).resolve().parent.parent / 'experiments'
  if (beside / 'configs').is_dir():
    path = beside
  else:
    spec = importlib.util.find_spec('experiments')
    if spec is None or not spec.submodule_search_locations:
      raise ConfigError('the shipped experiments/ folder was not found (reinstall rcae_jax)')
    path = pathlib.Path(list(spec.submodule_search_locations)[0])
  if str(path.parent) not in sys.path:
    sys.path.insert(0, str(path.parent))
  return path


def config_path(spec):
  """`tiny`, `mtd:cpu` (a shipped config by name) or `path/to/file.py[:arg]` -> (path, arg)."""
  file, _, arg = str(spec).partition(':')
  path = pathlib.Path(file)
  if not path.suffix and len(path.parts) == 1:
    shipped = experiments_dir() / 'configs' / f'{file}.py'
    if not shipped.is_file():
      known = sorted(p.stem for p in shipped.parent.glob('*.py') if not p.stem.startswith('_'))
      raise ConfigError(f'no shipped config named {file!r}; known: {known} (or give a path)')
    return shipped, arg
  return path.resolve(), arg


def load_config(spec, overrides=()):
  """Loads `file.py[:arg]` or a shipped config by name, applies `key=value` overrides,
  validates."""
  path, arg = config_path(spec)
  if not path.is_file():
    raise ConfigError(f'config file {str(spec).partition(":")[0]!r} does not exist')
  experiments_dir()  # config files import experiments.configs.base
  module_spec = importlib.util.spec_from_file_location(f'_rcae_config_{path.stem}', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'config file {path} has no get_config()')
  config = module.get_config(arg) if arg else module.get_config()
  return apply_overrides(config, overrides)


def data_overrides(data=None, category=None):
  """The overrides of `--data NAME[:ROOT]` and `--category` (the CLI's and the study scripts')."""
  out = []
  if data:
    name, _, root = data.partition(':')
    out += [f'data.name={name}'] + ([f'data.root={root}'] if root else [])
  if category:
    out.append(f'data.category={category}')
  return out


def apply_overrides(config, overrides):
  config = ml_collections.ConfigDict(config.to_dict())
  config.lock()
  for item in overrides:
    key, sep, raw = item.partition('=')
    if not sep:
      raise ConfigError(f'override {item!r} is not of the form key=value')
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw  # a bare word is a string: --set data.name=mtd
    node, *_ = key.rsplit('.', 1)
    try:
      old = _get(config, key)
    except (KeyError, AttributeError):
      raise ConfigError(f'unknown config key {key!r}') from None
    if isinstance(old, tuple) and isinstance(value, (list, int, str)):
      value = tuple(value) if isinstance(value, list) else (value,)
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if type(old) is not type(value):
      raise ConfigError(f'config key {key!r} expects {type(old).__name__}, got {raw!r}')
    _set(config, key, value)
  validate(config)
  return config


def _get(config, key):
  node = config
  for part in key.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise KeyError(key)
    node = node[part]
  return node


def _set(config, key, value):
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    node = node[part]
  with node.unlocked():
    node[leaf] = value


_CHOICES = {
    'data.name': ('builtin', 'mvtec', 'visa', 'mtd', 'folder'),
    'data.source': ('files', 'prepared'),
    'anomaly.batching': ('auto', 'map', 'vmap'),
    'model.recursion': ('depth', 'iterate'),
    'model.dtype': ('float32', 'bfloat16'),
    'model.crd_loss': ('l2', 'bce', 'focal'),
    'model.crd_arch': ('small', 'unet'),
    'model.crd_padding': ('', 'zeros', 'reflect'),
    'depth_sampling': ('uniform', 'max'),
    'model.padding': ('zeros', 'reflect'),
    'score.image': ('max', 'topk', 'sum'),
    'score.source': ('auto', 'crd', 'dpn', 'rcae', 'fae'),
    'score.smoothing': ('gaussian', 'mean'),
    'method': ('rcae', 'fae'),
    **{f'stage{s}.schedule': ('constant', 'cosine') for s in (1, 2, 3)},
    **{f'stage{s}.flip': augment.MODES for s in (1, 2, 3)},
}


def validate(c):
  """Refuses values that would fail (or silently mislead) deep inside JAX."""
  for key, choices in _CHOICES.items():
    if _get(c, key) not in choices:
      raise ConfigError(f'{key}={_get(c, key)!r} is not one of {choices}')
  def need(cond, msg):
    if not cond:
      raise ConfigError(msg)
  need(c.data.channels in (1, 3), f'data.channels={c.data.channels} must be 1 or 3')
  if c.method == 'fae':
    need(tuple(c.stages) == (1,), f'method=fae trains one network in one stage: set '
         f'stages=(1,) (got {c.stages})')
    need(c.data.resolution % 2 ** (c.fae.levels - 1) == 0,
         f'data.resolution={c.data.resolution} must be divisible by 2^(fae.levels - 1)='
         f'{2 ** (c.fae.levels - 1)}')
    need(c.score.source in ('auto', 'fae'), f'score.source={c.score.source!r}: FAE has one '
         "map ('auto' or 'fae')")
  elif c.score.source == 'fae':
    raise ConfigError("score.source='fae' needs method=fae")
  from rcae_jax import discrepancy  # pylint: disable=g-import-not-at-top
  bad = [p for p in c.score.discrepancy.split('+') if p not in discrepancy.NAMES]
  need(not bad, f'score.discrepancy={c.score.discrepancy!r}: unknown {bad}; known '
       f'{discrepancy.NAMES}, or several joined by +')
  need(c.score.mean_size >= 1 and c.score.mean_repeats >= 0,
       'score.mean_size must be >= 1 and score.mean_repeats >= 0')
  need(c.model.depth >= 1, f'model.depth={c.model.depth} must be >= 1')
  need(c.model.features >= 1, 'model.features must be >= 1')
  levels = c.model.depth if c.model.recursion == 'depth' else c.model.iterate_levels
  need(c.data.resolution % (2 ** max(levels, 2)) == 0,
       f'data.resolution={c.data.resolution} must be divisible by 2^{max(levels, 2)} '
       f'({c.model.recursion} mode halves it {levels} times; the DPN/CRD twice)')
  need(c.model.groups == 0 or c.model.features % c.model.groups == 0,
       f'model.groups={c.model.groups} must divide model.features={c.model.features}')
  need(set(c.stages) <= {1, 2, 3} and 1 in c.stages and tuple(sorted(c.stages)) == tuple(c.stages)
       and (3 not in c.stages or 2 in c.stages),
       f'stages={c.stages} must be (1,), (1, 2) or (1, 2, 3)')
  bad = [s for s in c.model.crd_steps if not 1 <= s <= c.model.depth]
  need(not bad, f'model.crd_steps has steps {bad} outside 1..model.depth={c.model.depth}')
  need(0 < c.data.train_fraction <= 1, 'data.train_fraction must be in (0, 1]')
  need(0 <= c.data.val_fraction < 1, 'data.val_fraction must be in [0, 1)')
  need(c.batch_size >= 1, f'batch_size={c.batch_size} must be >= 1')
  for s in (1, 2, 3):
    st = c[f'stage{s}']
    need(st.steps > 0 or st.epochs > 0, f'stage{s}: steps or epochs must be > 0')
    need(st.lr > 0, f'stage{s}.lr must be > 0')
    need(0 <= st.jitter < 1, f'stage{s}.jitter={st.jitter} must be in [0, 1) (a log-gain range)')
  for s in (1, 2):
    st = c[f'stage{s}']
    need(0 <= st.get('noise', 0.0) <= 0.5,
         f'stage{s}.noise={st.get("noise")} must be in [0, 0.5] (a std on [0, 1] images)')
    need(st.get('region_weight', 0.0) >= 0, f'stage{s}.region_weight must be >= 0')
  need(c.model.get('skip_from', 1) >= 1,
       f'model.skip_from={c.model.get("skip_from")} must be >= 1 (1 = skips at every level)')
  levels = c.model.crd_levels
  need(levels >= 0 and c.data.resolution % 2 ** levels == 0,
       f'model.crd_levels={levels} must be >= 0 and 2^levels must divide data.resolution='
       f'{c.data.resolution}')
  need(c.model.crd_pos_weight >= 0, 'model.crd_pos_weight must be >= 0 (0 = balanced)')
  from rcae_jax import anomalies  # pylint: disable=g-import-not-at-top
  for name in ('anomaly', 'crd_anomaly'):
    a = c[name]
    for kind, known in (('shapes', anomalies.SHAPES), ('fillers', anomalies.FILLERS)):
      unknown = set(a[kind]) - set(known)
      need(a[kind] and not unknown, f'{name}.{kind}: unknown {sorted(unknown)}; known '
           f'{sorted(known)}')
    need(0 <= a.edge <= 1, f'{name}.edge={a.edge} must be a probability in [0, 1]')
    need(0 <= a.visible < 1, f'{name}.visible={a.visible} must be in [0, 1)')
    need(0 <= a.min_opacity <= 1, f'{name}.min_opacity={a.min_opacity} must be in [0, 1]')
    need(a.procedural >= 0, f'{name}.procedural must be >= 0')
  a, h = c.crd_anomaly, tuple(c.crd_anomaly.holdout)
  bad = [f for f in h if f not in a.shapes and f not in a.fillers]
  need(not bad, f'crd_anomaly.holdout: {bad} not in crd_anomaly.shapes {a.shapes} or '
       f'fillers {a.fillers}')
  need(not h or (set(a.shapes) - set(h) and set(a.fillers) - set(h)),
       f'crd_anomaly.holdout={h} would leave the CRD no shape or no filler')
  return c


def method(c):
  """'rcae' or 'fae' (configs written before FAE existed have no key: RcAE)."""
  return c.get('method', 'rcae')


def score_source(c):
  if method(c) == 'fae':
    return 'fae'
  if c.score.source != 'auto':
    return c.score.source
  return {1: 'rcae', 2: 'dpn', 3: 'crd'}[max(c.stages)]


def crd_steps(c):
  return tuple(c.model.crd_steps) or tuple(range(1, c.model.depth + 1))


def to_json(config):
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def from_json(text):
  return from_dict(json.loads(text))


def from_dict(d):
  """A config from its JSON form (lists back to tuples)."""
  def tuples(node):
    if isinstance(node, dict):
      return {k: tuples(v) for k, v in node.items()}
    return tuple(node) if isinstance(node, list) else node
  return ml_collections.ConfigDict(tuples(d))


def _merge(defaults, saved):
  out = dict(defaults)
  for k, v in saved.items():
    out[k] = _merge(defaults[k], v) if isinstance(v, dict) and isinstance(
        defaults.get(k), dict) else v
  return out


def _legacy(d):
  """Values that reproduce what a run saved before a key existed, where today's default
  would change its behaviour: the small CRD, zero/model padding, unweighted BCE, and stage
  3 drawing from `anomaly` (with the generator options it had then)."""
  out = {'model': {'crd_arch': 'small', 'crd_padding': '', 'crd_pos_weight': 1.0}}
  if 'anomaly' in d:
    out['crd_anomaly'] = {**{k: v for k, v in d['anomaly'].items() if k != 'batching'},
                          'edge': 0.0, 'visible': 0.0, 'procedural': 0, 'holdout': []}
  return out


def saved(d):
  """A config a run saved (its config.json), with the keys added to the platform since then
  at their defaults (`experiments/configs/base.py`), or at the value that keeps the earlier
  behaviour where the default changed (`_legacy`): older runs still evaluate, and resume
  under an unchanged command."""
  base = json.loads(to_json(load_config('base')))
  out = _merge(_merge(base, _legacy(d)), d)
  if out['crd_anomaly'].get('holdout') == '':  # how the first runs with the key saved ()
    out['crd_anomaly']['holdout'] = []
  return from_dict(out)


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
  return out


def flat(config):
  """{'model.depth': 5, ...} as a run's config.json stores it (lists for tuples)."""
  return _flatten(json.loads(to_json(config)))


def _trained_anything(workdir):
  """Whether any stage of the run in workdir saved a checkpoint step."""
  return any(p.is_dir() and p.name.isdigit()
             for p in pathlib.Path(workdir).glob('stage*/ckpt/*'))


def check_workdir(workdir, config):
  """Resuming a workdir trained with another config would mix two experiments: refuse.
  A workdir whose run never saved a step holds nothing to protect: accept, and say so."""
  path = pathlib.Path(workdir) / 'config.json'
  if not path.exists():
    return
  old = flat(saved(files.read_json(path)))
  new = flat(config)
  diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
  if diff and not _trained_anything(workdir):
    print(f'{workdir}: no training step was saved under the old config; starting afresh with '
          f'the new one (changed: {", ".join(diff[:6])})', flush=True)
    return
  if diff:
    raise ConfigError(
        f'{workdir} holds a run with a different config ({", ".join(diff[:6])}'
        f'{" ..." if len(diff) > 6 else ""}); use a new --workdir or the same config')
