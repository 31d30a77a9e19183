"""Shared test settings."""

import os

# Tests run on the CPU whatever accelerator the machine has.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
