"""Export a finished search's best model (``experiments/export.py``)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from nasq import checkpoints, export, export_onnx
from nasq import costs as costs_lib
from nasq import data as data_lib
from nasq.runs.config import from_config, space_from_config
from nasq.spaces import make_space
from nasq.spaces.macro import MacroArchitecture

# What the export imports (the ``export`` extra of setup.cfg), by module name.
EXPORT_MODULES = ("tensorflow", "ai_edge_litert", "onnx", "onnxruntime", "tflite_micro")


def check_export_extra() -> None:
  """Raises ``ImportError`` naming the install command if a module the export needs is
  missing (checked before a search that ends in an export starts)."""

  def found(module: str) -> bool:
    try:
      return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
      return False

  missing = [m for m in EXPORT_MODULES if not found(m)]
  if missing:
    raise ImportError(
      f"export=True needs the export extra (missing: {', '.join(missing)}): run "
      f"`pip install -e .[export]`, or set --config.export=False and run "
      f"experiments/export.py later"
    )


def export_workdir(
  workdir: str | Path,
  out_dir: str | Path | None = None,
  *,
  num_calibration: int = 500,
  num_test: int = 0,
) -> dict[str, Any]:
  """Exports the model of ``workdir`` into ``out_dir`` (default ``<workdir>/export``)
  and returns what the report states. ``workdir`` is a finished search (its best
  retrained model: ``best_checkpoint``, ``best_architecture.txt``) or a training run of
  ``experiments/train.py`` (``checkpoint``, ``result.json``)."""
  workdir = Path(workdir)
  out_dir = Path(out_dir) if out_dir else workdir / "export"
  if (workdir / "best_checkpoint").exists():
    checkpoint, arch_file = workdir / "best_checkpoint", workdir / "best_architecture.txt"
  else:
    checkpoint, arch_file = workdir / "checkpoint", workdir / "result.json"
  for path in (workdir / "config.json", arch_file, checkpoint):
    if not path.exists():
      raise export.ExportError(
        f"{workdir} has no {path.name}: export needs a finished search (its final "
        "retraining writes best_checkpoint and best_architecture.txt) or a finished "
        "experiments/train.py run (checkpoint, result.json)"
      )
  config = json.loads((workdir / "config.json").read_text())
  space = make_space(space_from_config(ml_collections.ConfigDict(config["space"])))
  if arch_file.suffix == ".json":
    text = json.loads(arch_file.read_text())["architecture"]
  else:
    text = arch_file.read_text().strip()
  arch = space.parse(text)
  weight_bits = int(config["weight_bits"])
  integer_qat = bool(config.get("integer_qat", False))
  variables = export.load_checkpoint(arch, weight_bits, checkpoint, integer_qat)
  # The data the checkpoint was trained on: a search's retraining uses final_data, a
  # training run its data. Its normalization statistics are stored with the checkpoint
  # (older checkpoints: recomputed from that data section, which gives the same).
  section = "final_data" if checkpoint.name == "best_checkpoint" else "data"
  data_config = from_config(data_lib.DataConfig, config[section], section)
  data_config = dataclasses.replace(data_config, test_size=num_test)
  dataset = data_lib.load_dataset(data_config)
  meta = checkpoints.checkpoint_meta(str(checkpoint))
  mean, std = (meta["mean"], meta["std"]) if meta else (dataset.mean, dataset.std)

  net = export.fold(arch, variables, weight_bits, mean, std)
  model = export.to_tflite(net, dataset.train.images[:num_calibration])
  test = dataset.test
  logits = export.tflite_logits(model, test.images)
  tflite_acc = float(np.mean(np.argmax(logits, -1) == test.labels))
  jax_acc = export.jax_accuracy(
    arch, weight_bits, variables, test.images, test.labels, net, integer_qat
  )
  onnx_model = export_onnx.to_onnx(net, dataset.train.images[:num_calibration])
  onnx_acc = float(
    np.mean(
      np.argmax(export_onnx.onnx_logits(onnx_model, test.images), -1) == test.labels
    )
  )
  summary = export.tflite_summary(model)
  arena = export.micro_arena(model)
  source, header = export.c_array(model)
  report = export_report(
    arch,
    weight_bits,
    integer_qat,
    float(jax_acc),
    tflite_acc,
    onnx_acc,
    len(test),
    model,
    summary,
    arena,
  )
  export.write_atomically(
    out_dir,
    {
      "model.tflite": model,
      "model.onnx": onnx_model,
      "model_data.cc": source,
      "model_data.h": header,
      "export_report.md": report,
    },
  )
  return {
    "dir": str(out_dir),
    "jax_accuracy": float(jax_acc),
    "tflite_accuracy": tflite_acc,
    "onnx_accuracy": onnx_acc,
    "num_test": len(test),
    "flatbuffer_bytes": len(model),
    "arena": arena,
    **summary,
  }


def export_report(
  arch: MacroArchitecture,
  weight_bits: int,
  integer_qat: bool,
  jax_accuracy: float,
  tflite_accuracy: float,
  onnx_accuracy: float,
  num_test: int,
  model: bytes,
  summary: dict[str, Any],
  arena: dict[str, int] | None = None,
) -> str:
  """``export_report.md``: accuracies of the three models, sizes against the cost
  model, and (given LiteRT Micro's ``arena``) peak memory against it."""
  c = costs_lib.compute_costs(arch, weight_bits)
  c8 = costs_lib.compute_costs(arch, 8)
  kernel_params = sum(u.kernel_params for u in c.layers)
  exported = summary["weight_bytes"] + summary["bias_bytes"]
  size8 = math.ceil(c8.model_size_bits / 8)
  lines = [
    "# Export report",
    "",
    f"Architecture: `{arch.to_string()}`, trained with {weight_bits}-bit weights"
    + (
      ", integer-faithful QAT (8-bit activations; the export uses their learned ranges)."
      if integer_qat
      else " (weight-only QAT; activation ranges calibrated on training images)."
    ),
    "",
    f"| model | test accuracy ({num_test} images) |",
    "|---|---|",
    f"| JAX QAT ({'8-bit' if integer_qat else 'float'} activations) | "
    f"{jax_accuracy:.4f} |",
    f"| model.tflite, int8, LiteRT interpreter | {tflite_accuracy:.4f} "
    f"({100 * (tflite_accuracy - jax_accuracy):+.2f} points) |",
    f"| model.onnx, int8 QDQ, onnxruntime | {onnx_accuracy:.4f} "
    f"({100 * (onnx_accuracy - jax_accuracy):+.2f} points) |",
    "",
    "| size | bytes |",
    "|---|---|",
    f"| flatbuffer (model.tflite) | {len(model)} |",
    f"| int8 weights in the flatbuffer ({kernel_params} in the cost model) | "
    f"{summary['weight_bytes']} |",
    f"| int32 biases in the flatbuffer | {summary['bias_bytes']} |",
    f"| weights + biases against the cost model's size at 8 bits ({size8}) | "
    f"{exported} ({100 * (exported - size8) / size8:+.1f}%) |",
  ]
  if weight_bits < 8:
    lines.append(
      f"| cost model: model size at {weight_bits} bits | {math.ceil(c.model_size_bits / 8)} |"
    )
  lines.append(
    f"| cost model: peak activation memory (int8) | {c.peak_activation_bytes} |"
  )
  if arena:
    lines += [
      f"| LiteRT Micro arena: activations (head) | {arena['head']} |",
      f"| LiteRT Micro arena: persistent runtime data (tail) | {arena['tail']} |",
      f"| LiteRT Micro arena: total | {arena['total']} |",
    ]
  lines += ["", f"Operators: {', '.join(summary['operators'])}.", ""]
  if weight_bits < 8:
    lines += [
      f"The {weight_bits}-bit weights are stored as int8 (one scale per output "
      f"channel): LiteRT Micro has no packed int{weight_bits} kernels. Packed, they "
      f"would take {math.ceil(kernel_params * weight_bits / 8)} bytes.",
      "",
    ]
  return "\n".join(lines)
