"""`python -m rcae_jax export`: a finished run as an artifact that runs without this project.

<out>/
  detector.stablehlo  the inference program (jax.export: StableHLO, a symbolic batch size,
                      lowered for CPU, CUDA and TPU): uint8 images -> smoothed maps, scores
  params.npz          its parameters (p00000, ... in the program's argument order)
  detector.json       preprocessing (size, channels, dtype, normalisation, how to resize),
                      threshold, method, versions, file hashes, the run's config
  check.npz           seeded images with the maps and scores `Detector.predict` gave them
  rcae_detector.py    the loader (jax + numpy only; `python rcae_detector.py <out>` checks)
  detector_b<N>.onnx  ONNX (jax2onnx), one per batch size asked for, checked in onnxruntime

ONNX has fixed batch sizes: jax2onnx 0.17 mis-shapes the RcAE's depths stacked along the
batch axis under a symbolic batch (onnxruntime: "Shape mismatch attempting to re-use
buffer"); at a fixed batch every op converts. The program is checked against `predict`
before the artifact is moved into place; an ONNX file that fails its check is not written
and detector.json says why.
"""
import hashlib
import importlib.resources
import os
import pathlib
import shutil
import tempfile

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

import rcae_jax

from rcae_jax import api, files, inference, runinfo
from rcae_jax import config as config_lib

FORMAT = 'rcae_jax.export/1'
PLATFORMS = ('cpu', 'cuda', 'tpu')
ONNX_TOLERANCE = 1e-4
CHECK_IMAGES = 4


def _sha256(path):
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def _program(config, params):
  """-> (fn(leaves, images uint8) -> (map, score), leaves): the inference path, its params
  a flat list so the artifact needs no pytree structure."""
  infer = inference.make_inference(config)
  leaves, tree = jax.tree.flatten(params)

  def fn(leaves, images):
    out = infer(jax.tree.unflatten(tree, leaves), images)
    return out['map'], out['score']

  return fn, leaves


def _onnx(fn, leaves, shape, path, check_images, want):
  """Writes ONNX at batch shape[0] when it converts and reproduces `want`; -> its record."""
  try:
    from jax2onnx import to_onnx  # pylint: disable=g-import-not-at-top
    import onnxruntime  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return {'error': f'not written: {e.name} is not installed (pip install jax2onnx '
                     'onnxruntime)'}
  consts = [jnp.asarray(leaf) for leaf in leaves]
  try:
    model = to_onnx(lambda images: fn(consts, images),
                    [jax.ShapeDtypeStruct(shape, jnp.uint8)], model_name='rcae_detector',
                    input_names=['images'], output_names=['maps', 'scores'])
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=['CPUExecutionProvider'])
    n = shape[0]
    idx = np.arange(n) % len(check_images)
    maps, scores = session.run(None, {'images': check_images[idx]})
  except Exception as e:  # pylint: disable=broad-except
    return {'error': f'not written: {type(e).__name__}: {str(e).splitlines()[0][:300]}'}
  diff = max(float(np.abs(maps - want[0][idx]).max()), float(np.abs(scores - want[1][idx]).max()))
  if not diff <= ONNX_TOLERANCE:
    return {'error': f'not written: onnxruntime differs from predict by {diff:.3g} '
                     f'(> {ONNX_TOLERANCE})'}
  files.atomic_write(path, model.SerializeToString())
  return {'file': path.name, 'batch': n, 'max_abs_diff': diff, 'sha256': _sha256(path)}


def export(workdir, out, onnx_batches=(1,), seed=0):
  """Writes the artifact of a finished run to `out` (replacing an earlier export there,
  refusing any other folder); -> detector.json's content."""
  out = pathlib.Path(out)
  if out.exists() and not (out / 'detector.json').is_file() and any(out.iterdir()):
    raise config_lib.ConfigError(f'--out {out}: a folder that is not an export; give a new or '
                                 f'empty folder (nothing there is overwritten)')
  detector = api.load(workdir)
  config = detector.config
  if config.data.get('resize', 'stretch') != 'stretch':
    # the artifact's program takes no padding mask, so it would score the padding too
    raise config_lib.ConfigError(
        f'{workdir}: data.resize={config.data.resize!r} runs cannot be exported yet (the '
        'exported program would score the padding as image); use the run through '
        'rcae_jax.load or `predict`, or train with data.resize=stretch to export')
  params = jax.device_get(jax.tree.map(lambda a: a.addressable_data(0), detector.params))
  fn, leaves = _program(config, params)
  h, w, c = detector.input_shape
  (b,) = jax.export.symbolic_shape('b')
  exported = jax.export.export(jax.jit(fn), platforms=PLATFORMS)(
      [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves],
      jax.ShapeDtypeStruct((b, h, w, c), jnp.uint8))
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (CHECK_IMAGES, h, w, c), dtype=np.uint8)
  want = detector.predict(images)
  got = exported.call(leaves, images)
  diff = float(np.abs(np.asarray(got[0]) - want.maps).max())
  if not diff <= 1e-5:
    raise RuntimeError(f'the exported program differs from predict by {diff:.3g}')
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{out.name}.', dir=out.parent))
  umask = os.umask(0)
  os.umask(umask)
  tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the artifact from other users
  try:
    (tmp / 'detector.stablehlo').write_bytes(exported.serialize())
    np.savez(tmp / 'params.npz', **{f'p{i:05d}': np.asarray(leaf) for i, leaf in
                                    enumerate(leaves)})
    np.savez(tmp / 'check.npz', images=images, maps=want.maps, scores=want.scores)
    shutil.copyfile(importlib.resources.files('rcae_jax') / 'export_loader.py',
                    tmp / 'rcae_detector.py')
    onnx = {str(n): _onnx(fn, leaves, (n, h, w, c), tmp / f'detector_b{n}.onnx', images,
                          (want.maps, want.scores)) for n in onnx_batches}
    meta = {
        'format': FORMAT,
        'input': {'shape': [None, h, w, c], 'dtype': 'uint8', 'layout': 'NHWC (B, H, W, C)',
                  'channels': 'RGB' if c == 3 else 'grey (luma)',
                  'normalisation': 'x / 255 inside the program',
                  'resize': f'resize each image to {w}x{h} (width x height) with bilinear '
                            'interpolation (PIL Image.resize(..., Image.BILINEAR)) first, as '
                            'training did'},
        'outputs': {'maps': f'(B, {h}, {w}) float32, the smoothed anomaly map',
                    'scores': '(B,) float32, the image score (score.image of the config)'},
        'threshold': detector.threshold,
        'calibration': detector.calibration,
        'method': config.method, 'stages': list(config.stages),
        'score_source': config_lib.score_source(config),
        'program': {'file': 'detector.stablehlo', 'platforms': list(PLATFORMS),
                    'batch': 'any (symbolic)', 'sha256': _sha256(tmp / 'detector.stablehlo')},
        'params': {'file': 'params.npz', 'count': len(leaves),
                   'n_params': int(sum(np.size(leaf) for leaf in leaves)),
                   'sha256': _sha256(tmp / 'params.npz')},
        'check': {'file': 'check.npz', 'images': CHECK_IMAGES, 'seed': seed,
                  'program_vs_predict': diff},
        'onnx': onnx,
        'versions': {'rcae_jax': rcae_jax.__version__, 'jax': jax.__version__,
                     'jaxlib': jaxlib.__version__, 'code': runinfo.code_version()},
        'workdir': str(pathlib.Path(workdir).absolute()),
        'config': config.to_dict(),
    }
    files.write_json(tmp / 'detector.json', meta)
    old = None
    if out.exists():
      old = out.parent / f'.{out.name}.old'
      shutil.rmtree(old, ignore_errors=True)
      out.rename(old)
    tmp.rename(out)
    if old:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return meta
