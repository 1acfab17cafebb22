"""rcae_jax: recursive reconstruction (RcAE + DPN + CRD) for industrial anomaly detection in JAX.

The Python API (`rcae_jax/api.py`): `load(workdir) -> Detector`, `train(config, data=...,
workdir=...)`, `evaluate(workdir)`, `validate(workdir, overrides=...)`, `export(workdir, out)`. Imported on first use, so
`python -m rcae_jax --help` does not start JAX.
"""
__version__ = '0.3.0'  # pyproject.toml reads it: one source

_API = ('load', 'train', 'evaluate', 'validate', 'Detector', 'Prediction', 'InputError')


def __getattr__(name):
  if name in _API:
    from rcae_jax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  if name == 'export':
    from rcae_jax import exporting  # pylint: disable=g-import-not-at-top
    return exporting.export
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(_API) + ['export'])
