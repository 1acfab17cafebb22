"""How far each network of a run looks: the receptive field of one map pixel, measured.

Tiled inference (`infer.tile`, `infer.overlap`) is exact where a pixel's receptive field
lies inside the tile part it is taken from (overlap/4 px from a tile's inner edge:
rcae_jax/inference.py) and the networks do not normalise; this says how large that is for
each score source of a config (RcAE: 'rcae' = the recursive AE alone, 'dpn' = with the DPN,
'crd' = the full pipeline). For the map's centre pixel of a --size image it takes the
gradient of the raw map with respect to the input and reports

  support_px  the largest distance (Chebyshev, px) from the centre at which the gradient is
              nonzero (> 1e-7 of its maximum): the architectural reach
  r99_px      the radius holding 99 % of the gradient's absolute mass: what matters in practice
  overlap_px  4 x r99: the infer.overlap at which tiles agree with the whole image to ~1 %

With --workdir the run's trained parameters are used, else the config's initialisation.

  python experiments/receptive_field.py --config mtd:cpu --size 256
  python experiments/receptive_field.py --workdir runs/mtd_crops --size 256

Prints a table and writes <out>/receptive_field.json (atomically) when --out is given.
"""
import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from rcae_jax import checkpoints, files, methods, sizes, tables  # pylint: disable=wrong-import-position
from rcae_jax import config as config_lib  # pylint: disable=wrong-import-position
from rcae_jax import model as model_lib  # pylint: disable=wrong-import-position


def measure(config, params, size, seed=0):
  """-> {source: {'support_px', 'r99_px', 'overlap_px'}} for every score source the config's
  stages train."""
  model = model_lib.from_config(config)
  (h, w), c = sizes.as_pair(size), config.data.channels
  x = jnp.asarray(np.random.default_rng(seed).random((1, h, w, c)), jnp.float32)
  yy, xx = np.mgrid[:h, :w]
  dist = np.maximum(np.abs(yy - h // 2), np.abs(xx - w // 2))
  out = {}
  for _, spec in methods.active(config):
    if not spec.source:
      continue
    centre = lambda img, s=spec.source: model.raw_map(params, img, s)[0][0, h // 2, w // 2, 0]
    g = np.abs(np.asarray(jax.jit(jax.grad(centre))(x))[0]).sum(-1)
    support = int(dist[g > 1e-7 * g.max()].max())
    mass = np.array([g[dist <= r].sum() for r in range(int(dist.max()) + 1)]) / g.sum()
    r99 = int(np.argmax(mass >= 0.99))
    out[spec.source] = {'support_px': support, 'r99_px': r99, 'overlap_px': 4 * r99}
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='tiny')
  p.add_argument('--workdir', default=None, help='a finished run (its config and params)')
  p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE')
  p.add_argument('--size', default='128', help='the probe image: S or HxW')
  p.add_argument('--out', default=None)
  args = p.parse_args(argv)
  if args.workdir:
    config, params = checkpoints.load_bundle(args.workdir)
  else:
    config = config_lib.load_config(args.config, args.set)
    params = model_lib.init_all(config, jax.random.PRNGKey(config.seed))
  try:
    size = sizes.parse(args.size)
  except ValueError as e:
    raise SystemExit(f'--size: {e}') from None
  result = measure(config, params, size)
  rows = [[src, v['support_px'], v['r99_px'], v['overlap_px']] for src, v in result.items()]
  print(tables.markdown(['source', 'support px', 'r99 px', 'overlap px (4 x r99)'], rows))
  if args.out:
    files.write_json(pathlib.Path(args.out) / 'receptive_field.json',
                     {'size': list(size), 'params': args.workdir or 'init', 'sources': result})


if __name__ == '__main__':
  main()
