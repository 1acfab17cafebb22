"""Does the exported detector score the test images as `evaluate` did?

    python experiments/export_check.py --workdir runs/bottle --export exported/

Reads the run's eval/scores.csv (written by `evaluate`), resizes each test image as
detector.json says (PIL bilinear), and scores it with the StableHLO loader
(`rcae_detector.py`, imported from the export) and every ONNX file of the export in
onnxruntime; prints the largest score difference of each to eval/scores.csv, whether every
decision agrees, and the median time per image of each at batch 1.
"""
import argparse
import csv
import importlib.util
import json
import pathlib
import statistics
import time

import numpy as np
from PIL import Image


def _loader(export_dir):
  spec = importlib.util.spec_from_file_location('rcae_detector', export_dir / 'rcae_detector.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.load(export_dir)


def _median_ms(fn, images, n=20):
  times = []
  for i in range(min(n, len(images))):
    t0 = time.perf_counter()
    fn(images[i:i + 1])
    times.append(time.perf_counter() - t0)
  return 1e3 * statistics.median(times)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--workdir', required=True, help='an evaluated run (eval/scores.csv)')
  ap.add_argument('--export', required=True, help='its export folder')
  args = ap.parse_args()
  rows = list(csv.DictReader(open(pathlib.Path(args.workdir) / 'eval' / 'scores.csv')))
  export_dir = pathlib.Path(args.export)
  meta = json.loads((export_dir / 'detector.json').read_text())
  _, h, w, c = meta['input']['shape']
  mode = 'RGB' if c == 3 else 'L'
  images = np.stack([np.asarray(Image.open(r['image']).convert(mode).resize(
      (w, h), Image.BILINEAR)).reshape(h, w, c) for r in rows])
  want = np.array([float(r['score']) for r in rows])
  decided = [r['decision'] for r in rows]
  detector = _loader(export_dir)
  out = detector.predict(images)
  report = {'n_images': len(rows),
            'stablehlo': {'max_abs_score_diff': float(np.abs(out['scores'] - want).max()),
                          'ms_per_image_b1': _median_ms(detector.predict, images)}}
  if all(decided):
    got = ['anomalous' if a else 'normal' for a in out['is_anomalous']]
    report['stablehlo']['decisions_equal'] = got == decided
  for n, rec in meta['onnx'].items():
    if 'file' not in rec:
      report[f'onnx_b{n}'] = rec
      continue
    import onnxruntime  # pylint: disable=g-import-not-at-top
    session = onnxruntime.InferenceSession(str(export_dir / rec['file']))
    k, scores = rec['batch'], []
    for i in range(0, len(images), k):  # fixed batches: the last one padded by repeats
      chunk = images[i:i + k]
      padded = np.concatenate([chunk, np.repeat(chunk[-1:], k - len(chunk), axis=0)])
      scores.append(session.run(None, {'images': padded})[1][:len(chunk)])
    scores = np.concatenate(scores)
    report[f'onnx_b{n}'] = {'max_abs_score_diff': float(np.abs(scores - want).max())}
    if k == 1:
      report[f'onnx_b{n}']['ms_per_image_b1'] = _median_ms(
          lambda x: session.run(None, {'images': x}), images)
  print(json.dumps(report, indent=1))


if __name__ == '__main__':
  main()
