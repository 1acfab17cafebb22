"""RcAE: one shared encoder step E and one shared decoder step D, applied recursively.

Depth mode (the paper): R_n = head(D^n(E^n(stem(x)))), n = 1..N. The encoder prefix
E^k(stem(x)) is computed once; decoding runs level by level from the bottom, and at each
level every depth that is still decoding is batched into one call of D, so the whole
sequence costs N calls of D instead of N(N+1)/2.

Iterate mode: R_n = AE(R_{n-1}), R_0 = x, with AE a full encode-decode pass of
`iterate_levels` steps; a fixed-shape recursion that runs in `jax.lax.scan`.

`RECURSIONS` (at the end) is the one table of modes; `sequence` and `at_depth` dispatch on it,
as pure functions of (module, params, x): everything else calls them. A new mode is one
entry there (docs/extending.md).
"""
import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from rcae_jax.models import layers


class EncoderStep(nn.Module):
  """E: (h, w, C) -> (h/2, w/2, C)."""
  features: int
  groups: int
  dtype: jnp.dtype = jnp.float32
  padding: str = 'SAME'

  @nn.compact
  def __call__(self, h):
    h = layers.ConvNormAct(self.features, (4, 4), (2, 2), self.groups, self.dtype,
                           self.padding)(h)
    return layers.ConvNormAct(self.features, (3, 3), (1, 1), self.groups, self.dtype,
                              self.padding)(h)


class DecoderStep(nn.Module):
  """D: (h/2, w/2, C) [+ skip (h, w, C)] -> (h, w, C)."""
  features: int
  groups: int
  skips: bool
  dtype: jnp.dtype = jnp.float32
  padding: str = 'SAME'

  @nn.compact
  def __call__(self, z, skip):
    conv = lambda: layers.ConvNormAct(self.features, (3, 3), (1, 1), self.groups, self.dtype,
                                      self.padding)
    z = conv()(layers.upsample2x(z))
    if self.skips:
      z = jnp.concatenate([z, skip.astype(z.dtype)], axis=-1)
    return conv()(z)


class RcAE(nn.Module):
  """Recursive autoencoder. `levels` = number of distinct E/D pairs (unshared ablation)."""
  out_channels: int
  features: int = 64
  depth: int = 5
  recursion: str = 'depth'
  iterate_levels: int = 2
  shared: bool = True
  skips: bool = True
  skip_from: int = 1  # levels below this get a zero skip: no full-resolution copy of x
  groups: int = 8
  dtype: jnp.dtype = jnp.float32
  padding: str = 'SAME'
  remat: bool = False  # recompute each E/D call's activations in the backward pass

  def setup(self):
    n_levels = self.depth if self.recursion == 'depth' else self.iterate_levels
    n_blocks = 1 if self.shared else n_levels
    self.stem = layers.ConvNormAct(self.features, (3, 3), (1, 1), self.groups, self.dtype,
                                   self.padding)
    # remat keeps only each step's input for the backward pass (memory at 1024²: the
    # full-resolution decoder calls dominate); the parameters are the same either way
    enc = nn.remat(EncoderStep) if self.remat else EncoderStep
    dec = nn.remat(DecoderStep) if self.remat else DecoderStep
    self.enc = [enc(self.features, self.groups, self.dtype, self.padding)
                for _ in range(n_blocks)]
    self.dec = [dec(self.features, self.groups, self.skips, self.dtype, self.padding)
                for _ in range(n_blocks)]
    self.head = nn.Conv(self.out_channels, (3, 3), padding=self.padding, dtype=self.dtype)

  def _E(self, level, h):  # level is 1-based
    return self.enc[0 if self.shared else level - 1](h)

  def _D(self, level, z, skip):
    if level < self.skip_from:  # zeros, not absent: the one shared D keeps one input width
      skip = jnp.zeros_like(skip)
    return self.dec[0 if self.shared else level - 1](z, skip)

  def _head(self, z):
    return nn.sigmoid(self.head(z).astype(jnp.float32))

  def encode_prefix(self, x, n):
    """[stem(x), E(stem(x)), ..., E^n(stem(x))]."""
    hs = [self.stem(x.astype(self.dtype))]
    for level in range(1, n + 1):
      hs.append(self._E(level, hs[-1]))
    return hs

  def reconstruct(self, x, n):
    """R_n for one static depth n (depth mode; the training path of stage 1)."""
    hs = self.encode_prefix(x, n)
    z = hs[n]
    for level in range(n, 0, -1):
      z = self._D(level, z, hs[level - 1])
    return self._head(z)

  def autoencode(self, x):
    """One full encode-decode pass of `iterate_levels` steps (the AE of iterate mode)."""
    hs = self.encode_prefix(x, self.iterate_levels)
    z = hs[-1]
    for level in range(self.iterate_levels, 0, -1):
      z = self._D(level, z, hs[level - 1])
    return self._head(z)

  def sequence(self, x):
    """R_1 ... R_N stacked: (N, B, H, W, C_out), depth mode (iterate mode: `sequence` below)."""
    b = x.shape[0]
    hs = self.encode_prefix(x, self.depth)
    z = None  # depths N..level+1 still decoding, stacked along the batch axis
    for level in range(self.depth, 0, -1):
      z = hs[level] if z is None else jnp.concatenate([z, hs[level]], axis=0)
      active = z.shape[0] // b
      skip = jnp.concatenate([hs[level - 1]] * active, axis=0)
      z = self._D(level, z, skip)
    recon = self._head(z).reshape((self.depth, b) + x.shape[1:3] + (self.out_channels,))
    return jax.lax.rev(recon, (0,))  # stacked N..1 -> 1..N (lax: no gather under export)

  def __call__(self, x):
    return self.sequence(x) if self.recursion == 'depth' else self.autoencode(x)


def _depth_sequence(module, params, x):
  return module.apply(params, x, method='sequence')


def _depth_at(module, params, x, n):
  return module.apply(params, x, n, method='reconstruct')


def _iterate_sequence(module, params, x):
  step = lambda r, _: (module.apply(params, r, method='autoencode'),) * 2
  return jax.lax.scan(step, x.astype(jnp.float32), None, length=module.depth)[1]


def _iterate_at(module, params, x, n):
  step = lambda r, _: (module.apply(params, r, method='autoencode'), None)
  return jax.lax.scan(step, x.astype(jnp.float32), None, length=n)[0]


@dataclasses.dataclass(frozen=True)
class Recursion:
  """A recursion scheme: sequence(module, params, x) -> R_1..R_N (N, B, H, W, C);
  at_depth(module, params, x, n) -> R_n for a static n (stage 1's training path);
  init_method: the module method `init` traces; levels(model_config): how many times the
  scheme halves the image (the sizes it accepts follow)."""
  sequence: Callable
  at_depth: Callable
  init_method: str
  levels: Callable


# The recursion modes (`model.recursion`): depth, the paper's R_n = head(D^n(E^n(stem(x))));
# iterate, R_n = AE(R_{n-1}) with a fixed-shape AE pass in lax.scan.
RECURSIONS = {
    'depth': Recursion(_depth_sequence, _depth_at, 'sequence', lambda m: m.depth),
    'iterate': Recursion(_iterate_sequence, _iterate_at, 'autoencode',
                         lambda m: m.iterate_levels),
}


def sequence(module, params, x):
  """R_1 ... R_N: (N, B, H, W, C) in the module's recursion mode."""
  return RECURSIONS[module.recursion].sequence(module, params, x)


def at_depth(module, params, x, n):
  """R_n for a static depth n in 1..N (what stage 1 trains): only the n levels it needs."""
  return RECURSIONS[module.recursion].at_depth(module, params, x, n)


def from_config(config):
  m = config.model
  return RcAE(out_channels=config.data.channels, features=m.features, depth=m.depth,
              recursion=m.recursion, iterate_levels=m.iterate_levels, shared=m.shared,
              skips=m.skips, skip_from=m.get('skip_from', 1), groups=m.groups,
              dtype=layers.dtype_of(m.dtype), padding=layers.padding_of(config),
              remat=m.get('remat', False))
