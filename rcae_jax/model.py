"""The model of a config, whatever its method: built by the method's declaration
(`rcae_jax/methods/`), cached per config, and initialised network by network.

A model offers what training and inference read: `init(net, rng)`, `raw_map(params, x,
source, with_sequences)` (image to unsmoothed map, plus the reconstructions when asked) and
`image_shape`. Training calls each stage's declared objective with it; inference calls
`raw_map`.
"""
import functools

import jax

from rcae_jax import config as config_lib
from rcae_jax import methods


def _stage_key(seed, k, n_stages):
  """The key of stage k's network: split from fold_in(PRNGKey(seed), k), item k - 1 (at
  least 3 ways, as the first RcAE runs drew them)."""
  keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), k), max(3, n_stages))
  return keys[k - 1]


def init_for_stage(config, k):
  """Stage k's network, initialised from (config.seed, k)."""
  method = methods.of(config)
  return from_config(config).init(method.stages[k - 1].net,
                                  _stage_key(config.seed, k, len(method.stages)))


def init_all(config, rng):
  """{net: params} of every network of the method, one key each, split from rng in stage
  order."""
  nets = [s.net for s in methods.of(config).stages]
  keys = jax.random.split(rng, max(3, len(nets)))
  model = from_config(config)
  return {net: model.init(net, k) for net, k in zip(nets, keys)}


def stage_nets(config):
  """{k: the network stage k trains} of the config's method."""
  return {k: s.net for k, s in enumerate(methods.of(config).stages, 1)}


@functools.lru_cache(maxsize=32)
def _from_json(config_json):
  config = config_lib.from_json(config_json)
  return methods.of(config).build(config)


def from_config(config):
  """The model of a config (cached: the same config gives the same object and programs)."""
  return _from_json(config_lib.program_json(config))
