"""Checkpoints of trained models: the variables (orbax) and, beside them, what a reader
needs to use them (the architecture, its quantization, the normalization statistics it
was trained with), so an export never reconstructs them."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from nasq import data as data_lib
from nasq.quant import QuantConfig
from nasq.spaces import Architecture


def save_checkpoint(
  path: str, variables: Any, meta: dict[str, Any] | None = None
) -> None:
  """Saves model variables with orbax (overwriting an earlier save at ``path``) and,
  given ``meta``, what a reader needs to use them beside it (``<path>.json``: the
  architecture, the weight bits, the normalization statistics the model was trained
  with), so an export never has to reconstruct them."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), jax.device_get(variables), force=True)
  checkpointer.wait_until_finished()
  if meta is not None:
    tmp = f"{path}.json.tmp"
    with open(tmp, "w") as f:
      json.dump(meta, f, indent=1)
    os.replace(tmp, f"{path}.json")


def load_checkpoint(path: str, like: Any) -> Any:
  """Restores variables saved by ``save_checkpoint``, shaped like ``like``."""
  return ocp.StandardCheckpointer().restore(os.path.abspath(path), like)


def checkpoint_meta(path: str) -> dict[str, Any] | None:
  """The ``meta`` saved with the checkpoint at ``path``, or None (older checkpoints)."""
  try:
    with open(f"{path}.json") as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def model_meta(
  architecture: Architecture, quantization: QuantConfig, data: data_lib.Dataset
) -> dict[str, Any]:
  """What ``save_checkpoint`` stores beside a trained model's variables."""
  return {
    "architecture": architecture.to_string(),
    "weight_bits": quantization.weight_bits,
    "integer_qat": quantization.integer_qat,
    "dataset": data.name,
    "input_shape": list(data.input_shape),
    "num_classes": data.num_classes,
    "mean": list(data.mean),
    "std": list(data.std),
  }
