"""nasq: hardware-aware Bayesian NAS of weight-quantized CNNs, in JAX."""

from nasq import _xla_flags

_xla_flags.configure()

__version__ = "0.1.0"
