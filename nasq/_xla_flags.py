"""XLA:CPU settings applied when nasq is imported (before JAX starts its backend).

``--xla_cpu_experimental_ynn_fusion_type=`` (empty) routes convolutions to XLA's Eigen
kernels instead of the YNNPACK fusion, which computes kernel gradients as convolutions
whose window is the whole image: measured 2-3x faster convolution backward passes on CPU
(experiments/benchmarks/train_throughput.py). The flag is experimental and an unknown
XLA flag aborts the process, so it is only added for jaxlib versions where it was
checked. Set ``NASQ_XLA_CPU_TUNING=0`` to leave XLA_FLAGS alone. It has no effect if the
JAX backend was already initialized before nasq was imported.
"""

from __future__ import annotations

import importlib.metadata
import os

CPU_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
CHECKED_JAXLIB_VERSIONS = ("0.10.2",)


def configure() -> bool:
  """Adds ``CPU_FLAG`` to XLA_FLAGS when safe; returns whether it is in effect."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" in flags:
    return CPU_FLAG in flags.split()
  if os.environ.get("NASQ_XLA_CPU_TUNING", "1") == "0":
    return False
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return False
  if version not in CHECKED_JAXLIB_VERSIONS:
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {CPU_FLAG}".strip()
  return True
