"""bench: every field, same hash twice, unknown steps refused."""
import json

from conftest import ROOT
from rcae_jax import __main__ as cli

FIELDS = {'name', 'compile_s', 'step_s_median', 'step_s_min', 'step_s_max', 'images_per_s',
          'flops', 'flops_per_s', 'peak_fraction', 'output_hash'}


def _bench(tmp_path, out, *extra):
  argv = ['bench', '--config', str(ROOT / 'experiments/configs/tiny.py'), '--iters', '2',
          '--devices', '1', '--resolution', '16', '--peak-tflops', '0.1', '--out', str(out),
          '--peak-matmul', '256', '--peak-copy-mib', '8',
          '--set', f'data.cache_dir={tmp_path}', *extra]
  assert cli.main(argv) == 0
  return json.loads(out.read_text())


def test_bench_json_fields_and_reproducible_hash(tmp_path):
  # with a decaying learning rate (mtd.py:cpu decays stage 3's; bench once refused such a
  # config): the step is timed like any other
  cosine = ('--set', 'stage1.schedule=cosine')
  a = _bench(tmp_path, tmp_path / 'a.json', '--what', 'train1,infer,input', '--profile', '4',
             *cosine)
  assert {'jax', 'flax'} <= set(a['env']['packages']) and a['env']['device_count'] == 4
  assert a['env']['config']['model']['depth'] == 3
  for row in a['steps']:
    assert FIELDS <= set(row), row['name']
    assert row['step_s_min'] <= row['step_s_median'] <= row['step_s_max']
  by = {r['name']: r for r in a['steps']}
  assert by['train1']['flops'] > 0 and 0 < by['train1']['peak_fraction'] < 1
  # this CPU's peak, measured in the same run, and each step's fraction of it
  peak = a['env']['measured_peak']
  assert peak['matmul_n'] == 256 and peak['float32_flops_per_s'] > 1e8
  assert peak['bfloat16_flops_per_s'] > 0 and peak['copy_bytes_per_s'] > 1e8
  for name in ('train1', 'infer'):
    row = by[name]
    assert row['peak_fraction_measured'] == row['flops_per_s'] / peak['float32_flops_per_s']
    assert row['bytes_accessed'] > 0 and row['bandwidth_fraction_measured'] > 0
  assert a['env']['config']['stage1']['schedule'] == 'cosine'
  # --profile: XLA's trace of the timed program, each operation tied to the model's code
  for name, module in (('train1', 'RcAE'), ('infer', 'CRD')):
    prof = by[name]['profile']
    assert prof['calls'] == 2 and 1 <= len(prof['ops']) <= 4 and len(prof['layers']) <= 4
    ms = [op['ms'] for op in prof['ops']]
    assert ms == sorted(ms, reverse=True) and 0 < sum(ms) <= prof['ops_ms'] + 1e-9
    assert all(op['opcode'] not in ('while', 'call', 'conditional') for op in prof['ops'])
    sources = ' '.join(op['source'] for op in prof['ops'])
    assert module in ' '.join(r['layer'] for r in prof['layers']) + sources, prof
  b = _bench(tmp_path, tmp_path / 'b.json', '--what', 'train1,infer',
             '--dtype', 'float32', 'bfloat16', *cosine)
  assert [r['dtype'] for r in b['steps']] == ['float32'] * 2 + ['bfloat16'] * 2
  assert b['steps'][0]['output_hash'] == by['train1']['output_hash']
  assert b['steps'][1]['output_hash'] == by['infer']['output_hash']
  assert b['steps'][3]['output_hash'] != by['infer']['output_hash']  # bf16 compute differs


def test_bench_refuses_unknown_steps(tmp_path, capsys):
  assert cli.main(['bench', '--what', 'train1,warp', '--out', str(tmp_path / 'x.json')]) == 2
  assert "unknown step(s) ['warp']" in capsys.readouterr().err


def test_bench_counts_every_tile_of_tiled_inference(tmp_path):
  """--size applies before --set (a tile is checked against the benched size), and a tiled
  program's FLOPs are the tile's times the number of tiles (XLA counts a scan body once)."""
  whole = _bench(tmp_path, tmp_path / 'w.json', '--what', 'infer', '--size', '16', '32')
  tiled = _bench(tmp_path, tmp_path / 't.json', '--what', 'infer', '--size', '32',
                 '--set', f'data.cache_dir={tmp_path}', 'infer.tile=16', 'infer.overlap=8')
  (f16, f32), row = [r['flops'] for r in whole['steps']], tiled['steps'][0]
  assert row['tile'] == [16, 16] and row['tiles'] == 9  # starts 0, 8, 16 on each axis
  assert 0.95 < row['flops'] / (9 * f16) < 1.2 and row['flops'] > f32
  assert row['compiled_bytes'] < whole['steps'][1]['compiled_bytes']


def test_conv_paths_im2col_is_the_same_convolution():
  """experiments/conv_paths.py times a convolution two ways: they must compute the same thing
  (every shape it measures, stride 1 and 2, against lax.conv_general_dilated)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from experiments import conv_paths  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for cin, cout, k, s, _ in conv_paths.SHAPES:
    x = rng.random((2, 8, 8, cin), np.float32)
    w = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
    pads = conv_paths._pads(k, s)  # pylint: disable=protected-access
    want = jax.lax.conv_general_dilated(x, w, (s, s), pads, dimension_numbers=conv_paths.DN)
    got = np.einsum('bhwk,ko->bhwo', conv_paths.patches(x, k, s, pads), w.reshape(-1, cout))
    assert got.shape == want.shape == (2, 8 // s, 8 // s, cout)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  row = conv_paths.measure(16, 16, 3, 1, 8, 'float32', batch=2, iters=1)
  assert row['max_rel_diff'] < 1e-5 and row['gflop'] == 3 * 2 * 2 * 8 * 8 * 9 * 16 * 16 / 1e9


def test_profile_ties_operations_to_their_source():
  """op_profile.sources: each instruction's opcode, shape and the JAX op it came from, a
  fusion without its own metadata taking its fused computation's root's."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from rcae_jax import op_profile  # pylint: disable=g-import-not-at-top
  fn = jax.jit(lambda x: jnp.tanh(x @ x.T) * 2.0)
  table = op_profile.sources(fn.lower(jnp.ones((8, 8))).compile().as_text())
  assert any(o == 'dot' or 'dot_general' in src for o, _, src in table.values()), table
  assert any('tanh' in src for _, _, src in table.values()), table
  text = ('ENTRY %main.1 (p: f32[4]) -> f32[4] {\n'
          '  %p = f32[4]{0} parameter(0)\n'
          '  ROOT %fusion = f32[4]{0} fusion(%p), kind=kLoop, calls=%fused_computation\n}\n'
          '%fused_computation (param_0: f32[4]) -> f32[4] {\n'
          '  %param_0 = f32[4]{0} parameter(0)\n'
          '  ROOT %sine.1 = f32[4]{0} sine(%param_0), metadata={op_name="jit(f)/jvp(M)/L/sin"}\n'
          '}\n')
  table = op_profile.sources(text)
  assert table['fusion'] == ('fusion', 'f32[4]{0}', 'jit(f)/jvp(M)/L/sin')
  assert op_profile.layer_of('jit(f)/jvp(M)/L/sin') == 'jvp(M)/L'
  assert op_profile.layer_of('') == '(no source)'
