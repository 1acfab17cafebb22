"""Configs are code: `path/to/config.py[:arg]` + `key=value` overrides, validated up front."""
import ast
import importlib.util
import inspect
import json
import pathlib
import sys
import traceback

import ml_collections

from rcae_jax import augment, files, methods, sizes


class ConfigError(ValueError):
  """A config file, key or value the platform refuses; the message names it."""


def experiments_dir():
  """The shipped `experiments/` (configs, sweep presets): beside the package in a clone or an
  editable install, else the `experiments` package that `pip install .` put on the path.
  The only place the platform looks for it; shipped config files import `experiments.configs`,
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
  validates. Every mistake in the file (a syntax error, an exception, a key the schema lacks:
  the base config comes locked, an argument it does not take) is one ConfigError naming the
  file and line."""
  path, arg = config_path(spec)
  if not path.is_file():
    raise ConfigError(f'config file {str(spec).partition(":")[0]!r} does not exist')
  experiments_dir()  # config files may import experiments.configs.*
  try:
    module_spec = importlib.util.spec_from_file_location(f'_rcae_config_{path.stem}', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    get = getattr(module, 'get_config', None)
    if get is None:
      raise ConfigError(f'config file {path} has no get_config()')
    takes = list(inspect.signature(get).parameters)
    if arg and not takes:
      raise ConfigError(f'config {path.name} takes no argument (got {arg!r}): use '
                        f'--config {str(spec).partition(":")[0]}')
    known = getattr(module, 'ARGS', None)
    if known is not None and arg not in known:
      raise ConfigError(f'config {path.name}: unknown argument {arg!r}; known: {tuple(known)}')
    config = get(arg) if arg else get()
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(_where(e, path)) from None
  _check_schema(config, path)
  return apply_overrides(config, overrides)


def _where(e, path):
  """'file:line: Type: message' of an exception raised while loading a config file: the
  innermost line of that file (or of the file the error points at)."""
  if isinstance(e, SyntaxError) and e.filename:
    return f'{e.filename}:{e.lineno}: SyntaxError: {e.msg}'
  frames = traceback.extract_tb(e.__traceback__)
  mine = [f for f in frames if pathlib.Path(f.filename).resolve() == path.resolve()]
  frame = (mine or frames or [None])[-1]
  where = f'{frame.filename}:{frame.lineno}' if frame else str(path)
  message = ' '.join(str(e).split())
  return f'{where}: {type(e).__name__}: {message[:300]}'


def _check_schema(config, path):
  """The loaded config has exactly the schema's keys (a config file may build its own dict
  instead of the locked base)."""
  from rcae_jax import base_config  # pylint: disable=g-import-not-at-top
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f'{path}: get_config() returned {type(config).__name__}, not a '
                      'ConfigDict (build on rcae_jax.base_config.get_config())')
  schema, mine = set(flat(base_config.get_config())), set(flat(config))
  missing, extra = sorted(schema - mine), sorted(mine - schema)
  if missing:
    raise ConfigError(f'{path}: get_config() returned a config without the schema\'s keys '
                      f'{missing[:5]}{" ..." if len(missing) > 5 else ""} (build on '
                      'rcae_jax.base_config.get_config())')
  if extra:
    raise ConfigError(f'{path}: unknown config keys {extra[:5]} (not in the schema, '
                      'rcae_jax/base_config.py)')


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
  sizes.migrate(config)
  for item in overrides:
    key, sep, raw = item.partition('=')
    if not sep:
      raise ConfigError(f'override {item!r} is not of the form key=value')
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw  # a bare word is a string: --set data.name=mtd
    if key == 'data.resolution':  # the older name of a square data.size
      key = 'data.size'
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
  sizes.migrate(config)
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
    'model.dtype': ('float32', 'bfloat16'),
    'model.crd_loss': ('l2', 'bce', 'focal'),
    'model.crd_arch': ('small', 'unet'),
    'model.crd_padding': ('', 'zeros', 'reflect'),
    'depth_sampling': ('uniform', 'max'),
    'model.padding': ('zeros', 'reflect'),
    'score.image': ('max', 'topk', 'sum'),
    'score.smoothing': ('gaussian', 'mean'),
}


def _choices():
  """The closed sets of values, with those that come from tables (methods, recursion modes,
  score sources)."""
  from rcae_jax.models import rcae  # pylint: disable=g-import-not-at-top
  return {**_CHOICES, 'method': methods.names(), 'model.recursion': tuple(rcae.RECURSIONS),
          'score.source': ('auto',) + methods.score_sources()}


def validate(c):
  """Refuses values that would fail (or silently mislead) deep inside JAX: the generic rules,
  each trained stage's group, and the method's own rules (`Method.validate`)."""
  for key, choices in _choices().items():
    if _get(c, key) not in choices:
      raise ConfigError(f'{key}={_get(c, key)!r} is not one of {choices}')
  def need(cond, msg):
    if not cond:
      raise ConfigError(msg)
  method = methods.of(c)
  n = len(method.stages)
  stages = tuple(c.stages)
  need(stages and stages == tuple(sorted(set(stages))) and set(stages) <= set(range(1, n + 1)),
       f'stages={c.stages} must be an increasing tuple of method={method.name}\'s stages '
       f'1..{n}')
  trained = set()
  for k in stages:
    spec = method.stages[k - 1]
    missing = [net for net in spec.reads if net not in trained]
    need(not missing, f'stages={c.stages} must be a set where each stage follows the stages training '
         f'what it reads: stage {k} ({spec.net}) reads {missing}')
    trained.add(spec.net)
    st = c[spec.group]
    need(st.schedule in ('constant', 'cosine'),
         f'{spec.group}.schedule={st.schedule!r} is not one of (\'constant\', \'cosine\')')
    need(st.flip in augment.MODES, f'{spec.group}.flip={st.flip!r} is not one of {augment.MODES}')
    need(st.get('crop_sampling', 'uniform') in augment.CROP_SAMPLING,
         f'{spec.group}.crop_sampling={st.get("crop_sampling")!r} is not one of '
         f'{augment.CROP_SAMPLING}')
    need(st.steps > 0 or st.epochs > 0, f'{spec.group}: steps or epochs must be > 0')
    need(st.lr > 0, f'{spec.group}.lr must be > 0')
    need(st.get('weight_decay', 0.0) >= 0, f'{spec.group}.weight_decay must be >= 0')
    need(0 <= st.jitter < 1,
         f'{spec.group}.jitter={st.jitter} must be in [0, 1) (a log-gain range)')
  sources = [s.source for _, s in methods.active(c) if s.source]
  need(sources, f'stages={c.stages} train no network that scores images')
  need(c.score.source == 'auto' or c.score.source in sources,
       f'score.source={c.score.source!r}: method={method.name} with stages={c.stages} '
       f"scores by {['auto'] + sources}")
  need(c.data.channels in (1, 3), f'data.channels={c.data.channels} must be 1 or 3')
  from rcae_jax import discrepancy  # pylint: disable=g-import-not-at-top
  bad = [p for p in c.score.discrepancy.split('+') if p not in discrepancy.NAMES]
  need(not bad, f'score.discrepancy={c.score.discrepancy!r}: unknown {bad}; known '
       f'{discrepancy.NAMES}, or several joined by +')
  need(c.score.mean_size >= 1 and c.score.mean_repeats >= 0,
       'score.mean_size must be >= 1 and score.mean_repeats >= 0')
  need(0 < c.data.train_fraction <= 1, 'data.train_fraction must be in (0, 1]')
  need(0 <= c.data.val_fraction < 1, 'data.val_fraction must be in [0, 1)')
  need(c.batch_size >= 1, f'batch_size={c.batch_size} must be >= 1')
  sizes.validate(c, need)
  need(c.infer.overlap >= 0, f'infer.overlap={c.infer.overlap} must be >= 0')
  need(c.infer.get('flips', '') in augment.MODES,  # the training flips' modes
       f"infer.flips={c.infer.get('flips')!r} must be one of "
       f"{', '.join(map(repr, augment.MODES))}")
  if c.infer.tile:
    tile = sizes.as_pair(c.infer.tile)
    need(all(c.infer.overlap < t for t in tile),
         f'infer.overlap={c.infer.overlap} must be smaller than infer.tile={tile}')
  method.validate(c, need)
  from rcae_jax import anomalies, crossfit  # pylint: disable=g-import-not-at-top
  crossfit.check(c, need)
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
  """The config's method name ('rcae' for configs written before the key existed)."""
  return c.get('method', 'rcae')


def score_source(c):
  return methods.score_source(c)


def to_json(config):
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def program_json(config):
  """The config as JSON less the keys no compiled program reads (`methods.HOST_ONLY`, each
  group's steps and epochs): the cache key of train steps, models and inference programs, so
  runs that differ only in length, logging or where their data lies reuse one trace and one
  compilation. The config rebuilt from it lacks those keys: code inside a program that
  read one would fail with a missing key, never run with another run's value."""
  flat_config = flat(config)
  kept = {k: v for k, v in flat_config.items()
          if not methods.matches(k, methods.HOST_ONLY)
          and not (k.count('.') == 1 and k.split('.')[1] in methods.LENGTH_KEYS)}
  nested = {}
  for k, v in kept.items():
    node = nested
    *parents, leaf = k.split('.')
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = v
  return json.dumps(nested, sort_keys=True)


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


def saved(d):
  """A config a run saved (its config.json), with the keys added to the platform since then
  at their defaults (`rcae_jax/base_config.py`), or at the value that keeps the earlier
  behaviour where the default changed (the method's `legacy`): older runs still evaluate, and resume
  under an unchanged command. Needs only the package."""
  from rcae_jax import base_config  # pylint: disable=g-import-not-at-top
  base = json.loads(to_json(base_config.get_config()))
  out = _merge(_merge(base, methods.get(d.get('method', 'rcae')).legacy(d)), d)
  if out['crd_anomaly'].get('holdout') == '':  # how the first runs with the key saved ()
    out['crd_anomaly']['holdout'] = []
  return sizes.migrate(from_dict(out))


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


def _differing(a, b):
  return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def run_diff(a, b, for_stage=None):
  """The keys by which two configs (flat, as `flat` gives them) make different runs: [] when
  they are the same run. The rule, from what each stage declares it reads
  (`rcae_jax/methods/`):

  - bookkeeping keys (`methods.BOOKKEEPING`: log_every, checkpoint interval, cache and data
    folders, ...) never count;
  - for_stage=None (resuming a run, reporting a finished one): every other key counts, but
    those only read by stages neither run trains (a +DPN run's stage3.lr, an RcAE run's
    fae.*);
  - for_stage=k (is stage k's checkpoint the same computation, for stage reuse): the keys
    stage k reads, with the stages whose networks it reads; keys read by no stage of any
    method count too, so a key added without a declaration can never reuse a checkpoint.
  """
  if a.get('method', 'rcae') != b.get('method', 'rcae'):
    return ['method']
  method = methods.get(a.get('method', 'rcae'))
  diff = [k for k in _differing(a, b) if not methods.matches(k, methods.BOOKKEEPING)]
  if for_stage is None:
    trained = set(a.get('stages', ())) | set(b.get('stages', ()))
    def counts(k):  # another method's keys (an RcAE run's fae.*) read by none of its stages
      if methods.matches(k, methods.EVAL_KEYS) or not methods.read_by_any(k):
        return True
      return any(methods.matches(k, methods.stage_keys(method, j)) for j in trained)
    return [k for k in diff if counts(k)]
  keys = methods.stage_keys(method, for_stage)
  return [k for k in diff if methods.matches(k, keys) or (
      not methods.read_by_any(k) and not methods.matches(k, methods.EVAL_KEYS))]


def same_run(a, b, for_stage=None):
  """Whether two configs (ConfigDicts or flat dicts) make the same run (`run_diff`)."""
  as_flat = lambda c: c if isinstance(c, dict) and not isinstance(
      c, ml_collections.ConfigDict) else flat(c)
  return not run_diff(as_flat(a), as_flat(b), for_stage)


def check_workdir(workdir, config):
  """Resuming a workdir trained with another config would mix two experiments: refuse
  (`run_diff`: bookkeeping keys such as log_every may change). A workdir whose run never
  saved a step holds nothing to protect: accept, and say so."""
  path = pathlib.Path(workdir) / 'config.json'
  if not path.exists():
    return
  diff = run_diff(flat(saved(files.read_json(path))), flat(config))
  if diff and not _trained_anything(workdir):
    print(f'{workdir}: no training step was saved under the old config; starting afresh with '
          f'the new one (changed: {", ".join(diff[:6])})', flush=True)
    return
  if diff:
    raise ConfigError(
        f'{workdir} holds a run with a different config ({", ".join(diff[:6])}'
        f'{" ..." if len(diff) > 6 else ""}); use a new --workdir or the same config')
