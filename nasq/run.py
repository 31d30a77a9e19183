"""Library side of the entry points: one call each, everything to the workdir."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections

from nasq import costs as costs_lib
from nasq import data as data_lib
from nasq import spaces
from nasq import train as train_lib
from nasq.quant import QuantConfig
from nasq.spaces.macro import REFERENCE_NETWORKS, space_for_string


def resolve_architecture(config: ml_collections.ConfigDict) -> Any:
  """The architecture named by ``config.arch`` for the dataset of ``config.data``.

  ``config.arch`` is a reference network name (read in the smallest macro space that
  holds it), a NAS-Bench-201 string (``|op~0|+...``), or a string of the macro space
  ``config.space``. The input shape and class count always come from the dataset.
  """
  info = data_lib.DATASETS.get(config.data.name)
  if info is None:
    raise ValueError(
      f"data.name must be one of {sorted(data_lib.DATASETS)}, got {config.data.name!r}"
    )
  if config.arch in REFERENCE_NETWORKS:
    text = REFERENCE_NETWORKS[config.arch][2]
    return space_for_string(text, info.input_shape, info.num_classes).parse(text)
  if config.space.name == "nb201" or config.arch.startswith("|"):
    space_config = spaces.default_config("nb201")
  else:
    space_config = ml_collections.ConfigDict(config.space.to_dict())
  space_config.input_shape, space_config.num_classes = info.input_shape, info.num_classes
  return spaces.make_space(space_config).parse(config.arch)


def train_one(config: ml_collections.ConfigDict, workdir: str) -> train_lib.TrainResult:
  """Trains one architecture (``configs/train.py``) and writes the results to workdir.

  Writes ``config.json``, ``costs.md`` (per-layer breakdown), ``metrics.jsonl`` (one
  line per epoch), ``result.json`` and, if training succeeded, an orbax checkpoint of
  the final variables under ``checkpoint/``.
  """
  os.makedirs(workdir, exist_ok=True)
  arch = resolve_architecture(config)
  quant = QuantConfig(config.weight_bits, config.activation_bits)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=1))
  costs = costs_lib.compute_costs(arch, quant.weight_bits, quant.activation_bits)
  with open(os.path.join(workdir, "costs.md"), "w") as f:
    f.write(costs_table(arch, costs))
  print(f"architecture: {arch.to_string()}")
  print(f"costs at {quant.weight_bits}-bit weights: {costs.summary()}")
  dataset = data_lib.load_dataset(config.data)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  with open(metrics_path, "w") as metrics_file:

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
      metrics_file.write(json.dumps(metrics) + "\n")
      metrics_file.flush()
      print(
        f"epoch {epoch}: "
        + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "epoch"),
        flush=True,
      )

    result = train_lib.train_and_evaluate(
      arch, quant, dataset, config.train, on_epoch=on_epoch
    )
  out = result.to_dict() | {"architecture": arch.to_string()}
  with open(os.path.join(workdir, "result.json"), "w") as f:
    json.dump(out, f, indent=1)
  if result.variables is not None:
    save_checkpoint(os.path.join(workdir, "checkpoint"), result.variables)
  print(
    f"status={result.status} val_accuracy={result.val_accuracy} "
    f"test_accuracy={result.test_accuracy} wall_time_s={result.wall_time_s:.1f}"
  )
  return result


def save_checkpoint(path: str, variables: Any) -> None:
  """Saves model variables with orbax (overwriting an earlier save at ``path``)."""
  import orbax.checkpoint as ocp

  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), jax.device_get(variables), force=True)
  checkpointer.wait_until_finished()


def load_checkpoint(path: str, like: Any) -> Any:
  """Restores variables saved by ``save_checkpoint``, shaped like ``like``."""
  import orbax.checkpoint as ocp

  return ocp.StandardCheckpointer().restore(os.path.abspath(path), like)


def costs_table(arch: Any, costs: costs_lib.Costs) -> str:
  """A Markdown per-layer cost breakdown."""
  lines = [
    f"# Costs of `{arch.to_string()}`",
    "",
    f"weights {costs.weight_bits}-bit, activations {costs.activation_bits}-bit: "
    f"{costs.params} params, {costs.macs} MACs, {costs.model_size_bits} bits "
    f"({costs.model_size_bits / 8 / 1000:.2f} kB), peak activations "
    f"{costs.peak_activation_bytes} bytes",
    "",
    "| layer | op | input | output | params | MACs | weight bits | size (bits) |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for u in costs.layers:
    if u.params or u.macs:
      lines.append(
        f"| {u.name} | {u.op} | {u.input_shape} | {u.output_shape} | "
        f"{u.params} | {u.macs} | {u.weight_bits if u.kernel_params else '-'} "
        f"| {u.model_size_bits} |"
      )
  return "\n".join(lines) + "\n"
