"""Shared test settings: float64 off by default; tests that need it enable it locally."""

import os

# Tests run on CPU whatever the machine has.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
