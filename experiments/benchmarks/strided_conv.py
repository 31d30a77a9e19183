r"""Stride-2 convolution gradients: space-to-depth against XLA's own, side by side.

For each (kernel size, channels, input size), the gradient of a stride-2 SAME
convolution (input and kernel, batch 128, float32) computed two ways, compiled once
each and timed interleaved in one process (7 rounds, median), so both see the same
machine load:

  s2d     ``nasq.ops._strided_conv``: XLA's forward, gradients through the
          space-to-depth form (a stride-1 convolution over 4x the channels)
  native  ``lax.conv_general_dilated`` at stride 2 and XLA's gradient

``nasq.ops.uses_space_to_depth`` picks the faster per kernel size and width from this
table.

  python experiments/benchmarks/strided_conv.py

About a minute on 2 cores.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _subprocess  # noqa: E402

from nasq import ops  # noqa: E402

CASES = (
  (3, 16, 28),
  (3, 32, 28),
  (3, 64, 28),
  (3, 16, 14),
  (3, 32, 14),
  (3, 64, 14),
  (5, 16, 28),
  (5, 32, 28),
  (5, 64, 28),
  (5, 64, 14),
  (7, 16, 28),
  (7, 64, 28),
  (7, 64, 14),
)


def gradient(path: str):
  conv = ops._strided_conv if path == "s2d" else lambda x, w: ops._lax_conv(x, w, 2)
  return jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))


def main(argv):
  del argv
  print(
    f"machine: {os.cpu_count()} cores, {_subprocess.cpu_model()}; batch 128, float32; "
    "ms per gradient, median of 7 interleaved rounds"
  )
  print("| kernel | input | s2d (ms) | native (ms) | native / s2d | nasq uses |")
  print("|---|---|---|---|---|---|")
  rng = np.random.default_rng(0)
  for k, c, size in CASES:
    x = jnp.asarray(rng.normal(size=(128, size, size, c)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, c, c)), jnp.float32)
    fns = {p: gradient(p) for p in ("s2d", "native")}
    for f in fns.values():
      jax.block_until_ready(f(x, w))
    times: dict[str, list[float]] = {p: [] for p in fns}
    for _ in range(7):
      for p, f in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(f(x, w))
        times[p].append(time.perf_counter() - start)
    ms = {p: 1e3 * float(np.median(v)) for p, v in times.items()}
    used = "s2d" if ops.uses_space_to_depth(k, c) else "native"
    print(
      f"| {k}x{k}, {c} -> {c} | {size}x{size} | {ms['s2d']:.1f} | {ms['native']:.1f} | "
      f"{ms['native'] / ms['s2d']:.2f}x | {used} |",
      flush=True,
    )


if __name__ == "__main__":
  app.run(main)
