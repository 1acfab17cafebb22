"""rcae_jax: recursive reconstruction (RcAE + DPN + CRD) for industrial anomaly detection in JAX."""
__version__ = '0.1.0'
