"""Trains one architecture (``experiments/train.py``, ``configs/train.py``)."""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections

from nasq import checkpoints, report
from nasq import costs as costs_lib
from nasq import data as data_lib
from nasq import train as train_lib
from nasq.quant import QuantConfig
from nasq.runs.config import from_config, space_from_config, to_config, user_errors
from nasq.spaces import Architecture, make_space, space_config
from nasq.spaces.macro import REFERENCE_NETWORKS, space_for_string


def resolve_architecture(
  config: ml_collections.ConfigDict, input_shape: tuple[int, int, int], num_classes: int
) -> Architecture:
  """The architecture named by ``config.arch`` for images of ``input_shape`` and
  ``num_classes`` classes (the dataset's).

  ``config.arch`` is a reference network name (read in the smallest macro space that
  holds it), a NAS-Bench-201 string (``|op~0|+...``), or a string of the macro space
  ``config.space``.
  """
  if config.arch in REFERENCE_NETWORKS:
    text = REFERENCE_NETWORKS[config.arch][2]
    return space_for_string(text, input_shape, num_classes).parse(text)
  if config.space.name == "nb201" or config.arch.startswith("|"):
    space = space_config("nb201")
  else:
    space = space_from_config(config.space)
  space = dataclasses.replace(space, input_shape=input_shape, num_classes=num_classes)
  return make_space(space).parse(config.arch)


def train_one(config: ml_collections.ConfigDict, workdir: str) -> train_lib.TrainResult:
  """Trains one architecture (``configs/train.py``) and writes the results to workdir.

  Writes ``config.json``, ``costs.md`` (per-layer breakdown), ``metrics.jsonl`` (one
  line per epoch), ``result.json`` and, if training succeeded, an orbax checkpoint of
  the final variables under ``checkpoint/`` with ``checkpoint.json`` beside it (the
  architecture and the normalization statistics it was trained with).
  """
  with user_errors():
    quant = QuantConfig(config.weight_bits, config.activation_bits, config.integer_qat)
    data_config = from_config(data_lib.DataConfig, config.data, "data")
    train_config = from_config(train_lib.TrainConfig, config.train, "train")
    dataset = data_lib.load_dataset(data_config)
    arch = resolve_architecture(config, tuple(dataset.input_shape), dataset.num_classes)
  train_lib.use_compilation_cache(config.compilation_cache_dir)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=1))
  costs = costs_lib.compute_costs(arch, quant.weight_bits, quant.activation_bits)
  with open(os.path.join(workdir, "costs.md"), "w") as f:
    f.write(report.costs_table(arch, costs))
  print(f"architecture: {arch.to_string()}")
  print(f"costs at {quant.weight_bits}-bit weights: {costs.summary()}")
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
      arch, quant, dataset, train_config, on_epoch=on_epoch
    )
  out = result.to_dict() | {"architecture": arch.to_string()}
  with open(os.path.join(workdir, "result.json"), "w") as f:
    json.dump(out, f, indent=1)
  if result.variables is not None:
    checkpoints.save_checkpoint(
      os.path.join(workdir, "checkpoint"),
      result.variables,
      checkpoints.model_meta(arch, quant, dataset),
    )
  print(
    f"status={result.status} val_accuracy={result.val_accuracy} "
    f"test_accuracy={result.test_accuracy} wall_time_s={result.wall_time_s:.1f}"
  )
  return result


def default_config() -> ml_collections.ConfigDict:
  """Every field ``train_one`` reads (configs/train.py overrides a few)."""
  config = ml_collections.ConfigDict()
  # Architecture: a name from nasq.spaces.macro.REFERENCE_NETWORKS, a macro-space string
  # ("conv3:s1:c32 maxpool:s2 ..."), or a NAS-Bench-201 string (with space.name=nb201).
  config.arch = "fmnist_ref"
  config.space = to_config(space_config("macro"))  # Space the string is read in.
  config.weight_bits = 4  # Weight bit width: 2..8, or 32 for float.
  config.activation_bits = 8  # Activation bits for the peak-memory cost.
  # Integer-faithful QAT (nasq.quant.QuantConfig.integer_qat): 8-bit activations with
  # learned ranges, as the int8 export computes them.
  config.integer_qat = False
  config.data = to_config(data_lib.DataConfig())  # Dataset and split.
  config.train = to_config(train_lib.TrainConfig())  # Schedule.
  # Compiled XLA programs kept across runs; "" = off.
  config.compilation_cache_dir = "~/.cache/nasq/xla"
  return config
