"""The XLA:CPU flag nasq sets at import: accepted by this jaxlib, and can be turned off."""

import os
import subprocess
import sys

import pytest

SNIPPET = (
  "import nasq, os, jax, jax.numpy as jnp\n"
  "x = jnp.ones((2, 8, 8, 3))\n"
  "w = jnp.ones((3, 3, 3, 4))\n"
  "f = lambda w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',"
  " dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()\n"
  "print(float(jax.jit(jax.grad(f))(w).sum()), os.environ.get('XLA_FLAGS', ''))\n"
)


@pytest.mark.parametrize("tuning", ["1", "0"])
def test_flag_is_accepted_and_optional(tuning):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["NASQ_XLA_CPU_TUNING"] = tuning
  proc = subprocess.run(
    [sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, timeout=120
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  grad_sum, *flags = proc.stdout.split()
  # Every output position sees between 4 and 9 input pixels of 3 channels: a real value.
  assert float(grad_sum) > 0
  assert ("--xla_cpu_experimental_ynn_fusion_type=" in flags) == (tuning == "1")
