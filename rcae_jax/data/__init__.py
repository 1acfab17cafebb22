"""Datasets: every layout is read into the same `Dataset` of decoded, resized arrays."""
from rcae_jax.data.common import Dataset, DataError, Sample  # noqa: F401
from rcae_jax.data.loader import load, load_split, prepare  # noqa: F401
