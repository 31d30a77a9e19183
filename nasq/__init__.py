"""nasq: hardware-aware Bayesian NAS of weight-quantized CNNs, in JAX."""

__version__ = "0.1.0"
