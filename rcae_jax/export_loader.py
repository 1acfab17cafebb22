"""Runs a detector exported by `python -m rcae_jax export`, with jax and numpy only.

Copied into every export as `rcae_detector.py`; it never imports rcae_jax:

    import rcae_detector
    detector = rcae_detector.load('exported/')
    out = detector.predict(images)     # uint8 (B, H, W, C) at the recorded size, any B
    out['maps'], out['scores'], out['is_anomalous']

`python rcae_detector.py exported/` checks the artifact against the maps and scores
recorded at export time (check.npz) and prints the preprocessing it expects.
"""
import hashlib
import json
import pathlib
import sys

import jax
from jax import export as jax_export
import numpy as np

FORMAT = 'rcae_jax.export/1'
TOLERANCE = 1e-5  # recorded vs recomputed maps (float reassociation across machines)


class ExportError(ValueError):
  """A wrong, damaged or mismatched artifact, or images it cannot take: one line."""


def _sha256(path):
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


class Detector:
  """The exported program, its parameters and its recorded preprocessing and threshold."""

  def __init__(self, path):
    self.path = pathlib.Path(path)
    meta_path = self.path / 'detector.json'
    if not meta_path.is_file():
      raise ExportError(f'{self.path}: no detector.json (not an rcae_jax export)')
    self.meta = json.loads(meta_path.read_text())
    if self.meta.get('format') != FORMAT:
      raise ExportError(f'{meta_path}: format {self.meta.get("format")!r}, this loader reads '
                        f'{FORMAT!r}')
    for name in ('program', 'params'):
      f = self.meta[name]
      if _sha256(self.path / f['file']) != f['sha256']:
        raise ExportError(f'{self.path / f["file"]}: its sha256 differs from detector.json\'s '
                          f'(damaged or replaced); export again')
    try:
      self._exported = jax_export.deserialize(bytearray((self.path / self.meta['program']['file'])
                                                        .read_bytes()))
    except Exception as e:  # pylint: disable=broad-except
      raise ExportError(f'{self.path / self.meta["program"]["file"]}: jax {jax.__version__} '
                        f'cannot read it (exported with jax {self.meta["versions"]["jax"]}): '
                        f'{type(e).__name__}: {str(e).splitlines()[0][:200]}') from None
    with np.load(self.path / self.meta['params']['file']) as z:
      self._params = [z[f'p{i:05d}'] for i in range(self.meta['params']['count'])]
    want = self._exported.in_avals[:-1]
    got = [(p.shape, p.dtype) for p in self._params]
    if [(a.shape, a.dtype) for a in want] != got:
      raise ExportError(f'{self.path / self.meta["params"]["file"]}: parameter shapes differ '
                        f'from the program\'s')
    pre = self.meta['input']
    self.input_shape = tuple(pre['shape'][1:])  # (H, W, C)
    self.threshold = self.meta['threshold']

  def predict(self, images):
    """uint8 images (B, H, W, C) at input_shape -> {'maps': (B, H, W) float32, 'scores': (B,),
    'is_anomalous': (B,) bool or None when the run had no threshold}."""
    x = np.asarray(images)
    h, w, c = self.input_shape
    how = self.meta['input']['resize']
    if x.dtype != np.uint8:
      raise ExportError(f'images: dtype {x.dtype}, the detector takes uint8 (0-255) '
                        f'(B, {h}, {w}, {c}); {how}')
    if x.ndim != 4 or x.shape[1:] != (h, w, c):
      raise ExportError(f'images: shape {x.shape}, the detector takes (B, {h}, {w}, {c}) uint8; '
                        f'{how}')
    maps, scores = self._exported.call(self._params, x)
    maps, scores = np.asarray(maps), np.asarray(scores)
    decisions = None if self.threshold is None else scores > self.threshold
    return {'maps': maps, 'scores': scores, 'is_anomalous': decisions}

  def verify(self):
    """Recomputes the maps and scores recorded at export time (check.npz): -> the largest
    difference; raises ExportError beyond TOLERANCE."""
    with np.load(self.path / 'check.npz') as z:
      images, maps, scores = z['images'], z['maps'], z['scores']
    out = self.predict(images)
    diff = max(float(np.abs(out['maps'] - maps).max()), float(np.abs(out['scores'] - scores).max()))
    if not diff <= TOLERANCE:
      raise ExportError(f'{self.path}: maps differ from those recorded at export by {diff:.3g} '
                        f'(> {TOLERANCE}) on this machine (jax {jax.__version__})')
    return diff


def load(path):
  return Detector(path)


if __name__ == '__main__':
  try:
    det = load(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent)
    d = det.verify()
  except ExportError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'ok: {det.path} reproduces its recorded maps (max difference {d:.2g}); input uint8 '
        f'(B, {", ".join(map(str, det.input_shape))}): {det.meta["input"]["resize"]}; threshold '
        f'{det.threshold}')
