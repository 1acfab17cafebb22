"""The base config is the package's schema (`rcae_jax/base_config.py`); config files written
against `experiments.configs.base` keep working."""
from rcae_jax.base_config import get_config  # noqa: F401
