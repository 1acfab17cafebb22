"""`python -m rcae_jax demo`: the built-in texture data, all three stages, evaluation."""
import pathlib
import time

from rcae_jax import config as config_lib
from rcae_jax import api, training

DEMO_CONFIG = 'demo'  # experiments/configs/demo.py


def run(workdir, category='brick', overrides=()):
  t0 = time.time()
  config = config_lib.load_config(DEMO_CONFIG, [f'data.category={category}', *overrides])
  training.train(config, workdir)
  result = api.evaluate(workdir)
  print()
  print(pathlib.Path(workdir, 'eval', 'metrics.md').read_text())
  print(f'demo finished in {time.time() - t0:.0f} s. Pictures: {workdir}/eval/heatmaps.png, '
        f'{workdir}/eval/sequence_*.png; metrics: {workdir}/eval/metrics.json')
  return result
