"""Configs: overrides, and bad keys or values refused with their names."""
import json
import os
import subprocess

import pytest

from conftest import ROOT, tiny_config
import rcae_jax
from rcae_jax import config as config_lib
from rcae_jax.config import ConfigError


@pytest.mark.parametrize('name', ['base', 'tiny', 'demo', 'paper', 'fae', 'fae:mtd:cpu'])
def test_configs_load(name):
  c = config_lib.load_config(name)
  assert c.model.depth >= 1
  assert config_lib.from_json(config_lib.to_json(c)).to_dict() == c.to_dict()


def test_paper_config():
  c = config_lib.load_config(ROOT / 'experiments' / 'configs' / 'paper.py')
  assert (c.data.size, c.model.depth, c.stage1.epochs, c.stage2.epochs,
          c.stage3.epochs, c.stage1.lr) == ((1024, 1024), 5, 1500, 400, 300, 1e-4)
  # the paper's plain reconstruction objective, every skip
  assert (c.stage1.restore, c.stage2.restore, c.stage1.noise, c.model.skip_from) == (
      False, False, 0.0, 1)


def test_overrides_apply(tmp_path):
  c = tiny_config(tmp_path, 'model.depth=2', 'stages=(1, 2)', 'model.crd_steps=[1]', 'data.name=mtd')
  assert c.model.depth == 2 and c.stages == (1, 2) and c.model.crd_steps == (1,)
  assert c.data.name == 'mtd'


@pytest.mark.parametrize('override,match', [
    ('model.dpeth=3', "unknown config key 'model.dpeth'"),
    ('nonsense=1', "unknown config key 'nonsense'"),
    ('model.depth=three', "'model.depth' expects int"),
    ('model.recursion=spiral', 'model.recursion=.spiral. is not one of'),
    ('data.resolution=20', r'data.size=\(20, 20\) \(depth mode halves it 3 times; the DPN/CRD '
     r'twice\): height 20 is not a multiple of 8 \(nearest valid: 16 or 24\)'),
    ('stages=(2, 3)', 'stages=.* must be'),
    ('model.crd_steps=(1, 9)', r'model.crd_steps has steps \[9\]'),
    ('anomaly.shapes=("star",)', "unknown \\['star'\\]"),
    ('depth', 'not of the form key=value'),
    ('stage1.noise=-0.1', r'stage1.noise=-0.1 must be in \[0, 0.5\]'),
    ('stage2.region_weight=-1.0', 'stage2.region_weight must be >= 0'),
    ('model.skip_from=0', 'model.skip_from=0 must be >= 1'),
    # the stage rules come from the method's declaration (rcae_jax/methods/)
    ('method=fae', r"stages=\(1, 2, 3\) must be an increasing tuple of method=fae's stages 1..1"),
    ('score.source=fae', r"score.source='fae': method=rcae with stages=\(1, 2, 3\) scores by"),
    ('score.discrepancy=mse+psnr', r"score.discrepancy='mse\+psnr': unknown \['psnr'\]"),
    ("crd_anomaly.holdout=('star',)", r"crd_anomaly.holdout: \['star'\] not in"),
    ('crd_anomaly.edge=1.5', r'crd_anomaly.edge=1.5 must be a probability'),
    ('model.crd_arch=resnet', 'model.crd_arch=.resnet. is not one of'),
    ('stage3.schedule=linear', 'stage3.schedule=.linear. is not one of'),
    ('stage1.flip=diagonal', 'stage1.flip=.diagonal. is not one of'),
    ('stage3.jitter=-0.1', r'stage3.jitter=-0.1 must be in \[0, 1\)'),
    ('stage3.recon_noise=0.9', r'stage3.recon_noise=0.9 must be in \[0, 0.5\]'),
    ('model.crd_levels=5', r'data.size=\(16, 16\) \(model.crd_levels=5 halvings\): height 16 '
     r'is not a multiple of 32 \(nearest valid: 32\)'),
])
def test_bad_overrides_refused(tmp_path, override, match):
  with pytest.raises(ConfigError, match=match):
    tiny_config(tmp_path, override)


def test_fae_config_takes_the_named_configs_data_and_budget():
  mtd = config_lib.load_config('mtd:cpu')
  c = config_lib.load_config('fae:mtd:cpu')
  assert (c.method, c.stages, c.data.name, c.data.size, c.batch_size) == (
      'fae', (1,), 'mtd', mtd.data.size, mtd.batch_size)
  assert c.fae.steps == mtd.stage1.steps + mtd.stage2.steps + mtd.stage3.steps  # its own group
  assert c.fae.lr == mtd.stage1.lr
  assert (c.stage1.restore, c.stage1.noise > 0, c.stage1.region_weight) == (True, True, 1.0)


def test_mvtec_config_is_the_mtd_recipe_in_colour():
  """mvtec.py changes only what the data is, at both scales: every choice stays MTD's."""
  for arg in ('', 'cpu'):
    mtd = json.loads(config_lib.to_json(config_lib.load_config(f'mtd:{arg}' if arg else 'mtd')))
    mvtec = json.loads(config_lib.to_json(
        config_lib.load_config(f'mvtec:{arg}' if arg else 'mvtec')))
    assert (mvtec['data']['name'], mvtec['data']['channels']) == ('mvtec', 3)
    for key in ('name', 'channels'):
      del mtd['data'][key], mvtec['data'][key]
    assert mvtec == mtd


def test_missing_config_file():
  with pytest.raises(ConfigError, match='does not exist'):
    config_lib.load_config('nope/missing.py')


def test_a_run_saved_before_new_keys_still_loads_and_resumes(tmp_path):
  """config.json written before keys were added (here the input-pipeline and memory keys):
  loading fills them with their defaults, and the same command resumes instead of refusing."""
  config = config_lib.load_config('tiny')
  old = json.loads(config_lib.to_json(config))
  for section, key in (('data', 'source'), ('data', 'read_threads'), ('model', 'remat'),
                       ('anomaly', 'batching')):
    del old[section][key]
  del old['eval_pixel_bits']
  (tmp_path / 'config.json').write_text(json.dumps(old))
  (tmp_path / 'stage1' / 'ckpt' / '50').mkdir(parents=True)  # a saved step
  loaded = config_lib.saved(old)
  assert loaded.data.source == 'files' and loaded.eval_pixel_bits == 20
  config_lib.check_workdir(tmp_path, config)  # accepted
  with pytest.raises(config_lib.ConfigError, match='data.source'):
    config_lib.check_workdir(tmp_path, config_lib.apply_overrides(config,
                                                                  ['data.source=prepared']))


def test_a_run_saved_before_the_new_crd_keeps_its_crd():
  """Keys whose default changed take the value that reproduces the old run: its small
  zero-padded CRD with unweighted BCE, trained on the `anomaly` generator."""
  old = json.loads(config_lib.to_json(config_lib.load_config('tiny')))
  for key in ('crd_arch', 'crd_padding', 'crd_pos_weight', 'crd_levels', 'crd_focal_gamma'):
    del old['model'][key]
  del old['crd_anomaly']
  for key in ('edge', 'visible', 'procedural'):
    del old['anomaly'][key]
  old['anomaly']['shapes'] = ['patch', 'line']
  c = config_lib.saved(old)
  assert (c.model.crd_arch, c.model.crd_padding, c.model.crd_pos_weight) == ('small', '', 1.0)
  assert c.crd_anomaly.shapes == ('patch', 'line') and c.crd_anomaly.edge == 0.0
  assert c.crd_anomaly.visible == 0.0 and c.crd_anomaly.procedural == 0
  new = config_lib.saved(json.loads(config_lib.to_json(config_lib.load_config('tiny'))))
  assert new.model.crd_arch == 'unet' and new.crd_anomaly.edge > 0


def test_same_run_ignores_bookkeeping_and_what_no_trained_stage_reads(tmp_path):
  config = config_lib.load_config('tiny', ['stages=(1, 2)'])
  (tmp_path / 'config.json').write_text(config_lib.to_json(config))
  (tmp_path / 'stage1' / 'ckpt' / '50').mkdir(parents=True)  # a saved step
  for bookkeeping in ('log_every=3', 'ckpt_every=7', 'eval_batch_size=4',
                      f'data.cache_dir={tmp_path}', 'data.read_threads=1'):
    config_lib.check_workdir(tmp_path, config_lib.apply_overrides(config, [bookkeeping]))
  # read only by stage 3, which this run does not train; an RcAE run's FAE keys
  config_lib.check_workdir(tmp_path, config_lib.apply_overrides(config, ['stage3.lr=0.5']))
  config_lib.check_workdir(tmp_path, config_lib.apply_overrides(config, ['fae.steps=7']))
  for key in ('stage2.lr=0.5', 'model.depth=2', 'score.image=topk', 'stages=(1, 2, 3)'):
    with pytest.raises(config_lib.ConfigError, match=key.split('=')[0]):
      config_lib.check_workdir(tmp_path, config_lib.apply_overrides(config, [key]))


def test_stage_reuse_counts_keys_no_stage_declares():
  """A key nobody declares reading (added without a declaration) always counts: it can
  never let a stage reuse a checkpoint computed with another value."""
  a = config_lib.flat(config_lib.load_config('tiny'))
  assert config_lib.same_run(a, {**a, 'stage3.lr': 0.5}, for_stage=1)
  assert not config_lib.same_run(a, {**a, 'model.new_knob': 1}, for_stage=1)
  assert not config_lib.same_run(a, {**a, 'model.new_knob': 1})
  assert config_lib.run_diff(a, {**a, 'method': 'fae'}) == ['method']


def test_a_fae_run_saved_with_stage1_settings_loads_them_into_its_group():
  old = json.loads(config_lib.to_json(config_lib.load_config('fae:tiny')))
  for key in ('steps', 'lr', 'noise', 'schedule'):
    del old['fae'][key]
  old['stage1'].update(steps=123, lr=0.25, noise=0.02, schedule='cosine')
  c = config_lib.saved(old)
  assert (c.fae.steps, c.fae.lr, c.fae.noise, c.fae.schedule) == (123, 0.25, 0.02, 'cosine')


def test_env_json_records_the_code(tmp_path):
  from rcae_jax import runinfo  # pylint: disable=g-import-not-at-top
  runinfo.write_run_files(tmp_path, config_lib.load_config('tiny'))
  code = json.loads((tmp_path / 'env.json').read_text())['code']
  assert set(code) == {'commit', 'dirty', 'version'}
  # the imported package's version, whatever egg-info/dist-info lies on sys.path; the
  # package metadata reads the same attribute
  assert code['version'] == rcae_jax.__version__
  tomllib = pytest.importorskip('tomllib')
  project = tomllib.loads((ROOT / 'pyproject.toml').read_text())
  assert project['project']['dynamic'] == ['version']
  assert project['tool']['setuptools']['dynamic']['version'] == {'attr': 'rcae_jax.__version__'}
  if (ROOT / '.git').exists():
    head = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', 'HEAD'], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert code['commit'] == head and isinstance(code['dirty'], bool)
    assert runinfo.describe(code).startswith(f'commit {head[:10]}')


def test_host_cpu_reads_model_cores_and_features(tmp_path):
  """host.cpu on an x86 and an ARM /proc/cpuinfo, and on none; env.json carries it."""
  from rcae_jax import host, runinfo  # pylint: disable=g-import-not-at-top
  x86 = tmp_path / 'x86'
  x86.write_text('processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: sse2 fma avx2 aes\n'
                 'bugs\t\t: sysret_ss_attrs\n\nprocessor\t: 1\nmodel name\t: other\n'
                 'flags\t\t: avx512f\n')
  got = host.cpu(x86)
  assert got['model'] == 'AMD EPYC' and got['flags'] == ['aes', 'avx2', 'fma', 'sse2']
  assert got['isa'] == ['avx2', 'fma']  # the first processor's, in host.ISA's order
  assert got['logical_cpus'] == os.cpu_count() and 1 <= got['usable_cpus'] <= os.cpu_count()
  arm = tmp_path / 'arm'
  arm.write_text('processor\t: 0\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n')
  assert host.cpu(arm)['isa'] == ['asimd', 'sve'] and host.cpu(arm)['model'] is None
  none = host.cpu(tmp_path / 'missing')
  assert (none['model'], none['flags'], none['isa']) == (None, [], [])
  runinfo.write_run_files(tmp_path, config_lib.load_config('tiny'))
  env = json.loads((tmp_path / 'env.json').read_text())
  assert env['cpu'] == {k: host.cpu()[k] for k in ('model', 'logical_cpus', 'usable_cpus', 'isa')}
  assert runinfo.describe_machine(
      {'devices': ['cpu:0:cpu', 'cpu:1:cpu'], 'cpu': {'model': 'AMD EPYC', 'isa': ['avx2']}}
  ) == '2 × cpu (CPU: AMD EPYC; avx2)'
  assert runinfo.describe_machine({'devices': ['gpu:0:NVIDIA H100 80GB HBM3']}) == (
      '1 × NVIDIA H100 80GB HBM3')  # an env.json from before the CPU was recorded
  assert runinfo.describe_machine(None) == 'an unrecorded machine'


def test_compilation_cache_folder(tmp_path):
  """compile_cache: on by default in a per-machine folder, RCAE_XLA_CACHE moves or stops it,
  JAX's own setting is left alone."""
  from rcae_jax import compile_cache  # pylint: disable=g-import-not-at-top
  env = {'XDG_CACHE_HOME': str(tmp_path)}
  path = compile_cache.enable(env)
  assert path == str(tmp_path / 'rcae_jax' / 'xla' / compile_cache.machine_tag())
  assert env['JAX_COMPILATION_CACHE_DIR'] == path
  assert env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] == '0'
  assert compile_cache.enable(env) is None and env['JAX_COMPILATION_CACHE_DIR'] == path
  assert compile_cache.cache_dir({'RCAE_XLA_CACHE': 'off'}) is None
  assert compile_cache.cache_dir({'RCAE_XLA_CACHE': '/x/y'}) == '/x/y'
  assert compile_cache.machine_tag().count('-') >= 1
