"""Export a finished search's best model (``experiments/export.py``)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from nasq import arena as arena_lib
from nasq import checkpoints, export, export_int4, export_onnx
from nasq import costs as costs_lib
from nasq import data as data_lib
from nasq.runs.config import from_config, space_from_config
from nasq.spaces import make_space
from nasq.spaces.macro import MacroArchitecture

# Seed of the export's calibration images and of its LiteRT Micro test images.
CALIBRATION_SEED = 0

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
  num_micro_test: int = 1000,
  reuse: bool = True,
) -> dict[str, Any]:
  """Exports the model of ``workdir`` into ``out_dir`` (default ``<workdir>/export``)
  and returns what the report states. ``workdir`` is a finished search (its best
  retrained model: ``best_checkpoint``, ``best_architecture.txt``) or a training run of
  ``experiments/train.py`` (``checkpoint``, ``result.json``).

  A finished export of the same inputs (the model's files, its config, these settings:
  ``inputs_fingerprint``) is reused, nothing recomputed, unless ``reuse`` is False."""
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
  settings = {
    "num_calibration": num_calibration,
    "num_test": num_test,
    "num_micro_test": num_micro_test,
  }
  inputs = inputs_fingerprint(
    [workdir / "config.json", arch_file, checkpoint, workdir / f"{checkpoint.name}.json"],
    settings,
  )
  if reuse and (done := _finished_export(out_dir, inputs)) is not None:
    return done
  config = json.loads((workdir / "config.json").read_text())
  # The data the checkpoint was trained on: a search's retraining uses final_data, a
  # training run its data. Its normalization statistics are stored with the checkpoint
  # (older checkpoints: recomputed from that data section, which gives the same).
  section = "final_data" if checkpoint.name == "best_checkpoint" else "data"
  data_config = from_config(data_lib.DataConfig, config[section], section)
  data_config = dataclasses.replace(data_config, test_size=num_test)
  dataset = data_lib.load_dataset(data_config)
  space_config = space_from_config(ml_collections.ConfigDict(config["space"]))
  space = make_space(
    dataclasses.replace(  # the space takes the data's images and classes
      space_config,
      input_shape=tuple(dataset.input_shape),
      num_classes=dataset.num_classes,
    )
  )
  if arch_file.suffix == ".json":
    text = json.loads(arch_file.read_text())["architecture"]
  else:
    text = arch_file.read_text().strip()
  arch = space.parse(text)
  weight_bits = int(config["weight_bits"])
  integer_qat = bool(config.get("integer_qat", False))
  variables = export.load_checkpoint(arch, weight_bits, checkpoint, integer_qat)
  meta = checkpoints.checkpoint_meta(str(checkpoint))
  mean, std = (meta["mean"], meta["std"]) if meta else (dataset.mean, dataset.std)

  net = export.fold(arch, variables, weight_bits, mean, std)
  # A seeded, class-stratified draw, not the first images (a folder is class-ordered).
  calibration = data_lib.sample(
    dataset.train, min(num_calibration, len(dataset.train)), CALIBRATION_SEED
  ).images
  model = export.to_tflite(net, calibration)
  test = dataset.test
  logits = export.tflite_logits(model, test.images)
  tflite_acc = float(np.mean(np.argmax(logits, -1) == test.labels))
  jax_acc = export.jax_accuracy(
    arch, weight_bits, variables, test.images, test.labels, net, integer_qat
  )
  onnx_model = export_onnx.to_onnx(net, calibration)
  onnx_acc = float(
    np.mean(
      np.argmax(export_onnx.onnx_logits(onnx_model, test.images), -1) == test.labels
    )
  )
  summary = export.tflite_summary(model)
  arena = export.micro_arena(model)
  files = {"model.tflite": model, "model.onnx": onnx_model}
  files["model_data.cc"], files["model_data.h"] = export.c_array(model)
  packed = None
  if any(
    conv.bits <= export_int4.INT4_BITS for layer in net.layers for conv in layer.convs
  ):
    packed = int4_export(arch, weight_bits, net, model, test, num_micro_test)
    files["model_int4.tflite"] = packed.pop("model")
    files["model_int4_data.cc"], files["model_int4_data.h"] = export.c_array(
      files["model_int4.tflite"], "g_model_int4_data"
    )
  files["export_report.md"] = export_report(
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
    packed,
  )
  result = {
    "dir": str(out_dir),
    "jax_accuracy": float(jax_acc),
    "tflite_accuracy": tflite_acc,
    "onnx_accuracy": onnx_acc,
    "num_test": len(test),
    "flatbuffer_bytes": len(model),
    "arena": arena,
    **summary,
    **({"int4": packed} if packed else {}),
  }
  files[RESULT] = json.dumps({"inputs": inputs, "result": result}, indent=1)
  export.write_atomically(out_dir, files)
  return result


# What an export writes beside its files: the fingerprint of its inputs and its result.
RESULT = "export_result.json"
# Increased whenever the export writes other files for the same inputs, so that no
# export of an older format is reused.
EXPORT_FORMAT = 1


def inputs_fingerprint(paths: list[Path], settings: dict[str, Any]) -> str:
  """SHA-256 of the export's inputs: the bytes of every file under ``paths`` (a
  missing one counts as absent), ``settings`` and ``EXPORT_FORMAT``."""
  digest = hashlib.sha256(json.dumps([EXPORT_FORMAT, settings], sort_keys=True).encode())
  for path in paths:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
      if f.exists():
        digest.update(str(f.relative_to(path.parent)).encode() + b"\0")
        digest.update(f.read_bytes())
  return digest.hexdigest()


def _finished_export(out_dir: Path, inputs: str) -> dict[str, Any] | None:
  """The result of the export in ``out_dir`` if it was made from ``inputs``."""
  try:
    saved = json.loads((out_dir / RESULT).read_text())
  except (OSError, ValueError):
    return None
  if saved.get("inputs") != inputs:
    return None
  return saved["result"] | {"dir": str(out_dir), "reused": True}


def resolver_call(op_name: str) -> str:
  """The ``MicroMutableOpResolver`` method that registers a LiteRT builtin operator
  (``DEPTHWISE_CONV_2D`` -> ``AddDepthwiseConv2D``)."""
  parts = op_name.split("_")
  return "Add" + "".join(p.upper() if p[:1].isdigit() else p.capitalize() for p in parts)


def device_guide(result: dict[str, Any]) -> str:
  """What to do with an export's files on a microcontroller (LiteRT Micro): where the
  C arrays are, the operators to register, the tensor arena to give the interpreter,
  and the input and output conventions."""
  out = Path(result["dir"])
  ops = result["operators"]
  lines = [
    f"Device files in {out}/:",
    "  model_data.cc, model_data.h: the int8 model as a C array (g_model_data, "
    "g_model_data_len)",
  ]
  if "int4" in result:
    lines.append(
      "  model_int4_data.cc, model_int4_data.h: the int4 model (g_model_int4_data), "
      "the smaller flash image"
    )
  lines += [
    "On LiteRT Micro (tflite-micro):",
    f"  tflite::MicroMutableOpResolver<{len(ops)}> resolver;",
    *(f"  resolver.{resolver_call(op)}();" for op in ops),
  ]
  if result.get("arena"):
    arena = f"  tensor arena: at least {result['arena']['total']} bytes (int8 model)"
    if "int4" in result:
      arena += f", {result['int4']['arena_int4']['total']} bytes (int4 model)"
    lines.append(arena)
  lines += [
    "  input: int8 [1, H, W, C], scale 1, zero point -128: write pixel - 128 for each "
    "0..255 value (the normalization is inside the graph)",
    "  output: int8 logits; the class is their argmax",
  ]
  return "\n".join(lines)


def int4_export(
  arch: MacroArchitecture,
  weight_bits: int,
  net: export.FoldedNetwork,
  model: bytes,
  test: data_lib.Split,
  num_micro_test: int,
) -> dict[str, Any]:
  """The int4 flatbuffer of a model with <= 4-bit layers, and what it is measured to
  be against the int8 one: both run by LiteRT Micro on ``num_micro_test`` test
  images, a seeded class-stratified draw (0: all; its reference kernels take about
  20 ms an image for a 20M-MAC network), their arenas (measured, and the cost model's
  prediction) and bytes."""
  packed, _ = export_int4.to_int4(model, net)
  n = len(test) if num_micro_test <= 0 else min(num_micro_test, len(test))
  micro = data_lib.sample(test, n, CALIBRATION_SEED)  # stratified, not the first n
  images, labels = micro.images, micro.labels

  def accuracy(m: bytes) -> float:
    return float(np.mean(np.argmax(export_int4.micro_logits(m, images), -1) == labels))

  return {
    "model": packed,
    "flatbuffer_bytes": len(packed),
    "num_micro_test": n,
    "micro_accuracy_int8": accuracy(model),
    "micro_accuracy_int4": accuracy(packed),
    "arena_int4": export.micro_arena(packed),
    "arena_int4_predicted": arena_lib.macro_arena_bytes(arch, 8, weight_bits),
    "filters_int8_model": export_int4.filter_bytes(model),
    "filters_int4_model": export_int4.filter_bytes(packed),
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
  packed: dict[str, Any] | None = None,
) -> str:
  """``export_report.md``: accuracies of the three models, sizes against the cost
  model, (given LiteRT Micro's ``arena``) peak memory against it, and (given the int4
  export's measurements, ``int4_export``) the packed model beside the int8 one."""
  c = costs_lib.compute_costs(arch, weight_bits)
  layer_bits = sorted({x.weight_bits for x in arch.layers if x.weight_bits is not None})
  # The int8 model stores every layer at 8 bits, whatever its own width.
  uniform = [dataclasses.replace(x, weight_bits=None) for x in arch.layers]
  c8 = costs_lib.compute_costs(dataclasses.replace(arch, layers=tuple(uniform)), 8)
  bits_text = f"{weight_bits}-bit weights"
  if layer_bits:
    bits_text = (
      f"per-layer {'/'.join(map(str, layer_bits))}-bit weights (the classifier's "
      f"{weight_bits})"
    )
  kernel_params = sum(u.kernel_params for u in c.layers)
  exported = summary["weight_bytes"] + summary["bias_bytes"]
  size8 = math.ceil(c8.model_size_bits / 8)
  lines = [
    "# Export report",
    "",
    f"Architecture: `{arch.to_string()}`, trained with {bits_text}"
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
  if weight_bits < 8 or layer_bits:
    at = "its layers' bits" if layer_bits else f"{weight_bits} bits"
    lines.append(
      f"| cost model: model size at {at} | {math.ceil(c.model_size_bits / 8)} |"
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
  if packed is not None:
    lines += int4_report(c, packed, len(model), arena)
  elif weight_bits < 8:
    lines += [
      f"The {weight_bits}-bit weights are stored as int8 (one scale per output "
      f"channel): no layer has at most 4 bits, so there is no int4 model.",
      "",
    ]
  return "\n".join(lines)


def int4_report(
  c: costs_lib.Costs, packed: dict[str, Any], int8_bytes: int, arena: dict | None
) -> list[str]:
  """The int4 section of ``export_report.md``."""
  f8, f4 = packed["filters_int8_model"], packed["filters_int4_model"]
  stored4 = f4["int4"] + f4["int8"] + f4["bias"]
  size = math.ceil(c.model_size_bits / 8)
  n = packed["num_micro_test"]
  a8, a4 = packed["micro_accuracy_int8"], packed["micro_accuracy_int4"]
  widths = sorted({u.weight_bits for u in c.layers if u.kernel_params})
  widths = (
    f"{widths[0]} bits"
    if len(widths) == 1
    else f"its layers' {'/'.join(map(str, widths))} bits"
  )
  lines = [
    "## model_int4.tflite: packed 4-bit filters",
    "",
    "Every convolution of at most 4 bits stores its filter as INT4 (two a byte, the "
    "QAT model's integers, one scale per output channel); 8-bit layers and the "
    "classifier (LiteRT Micro takes int4 fully-connected filters with one scale per "
    "tensor only) stay int8.",
    "",
    "| | model.tflite (int8) | model_int4.tflite |",
    "|---|---|---|",
    f"| flatbuffer bytes | {int8_bytes} | {packed['flatbuffer_bytes']} |",
    f"| filter bytes: int8 / int4 | {f8['int8']} / {f8['int4']} | "
    f"{f4['int8']} / {f4['int4']} |",
    f"| int32 bias bytes | {f8['bias']} | {f4['bias']} |",
    f"| LiteRT Micro test accuracy ({n} images) | {a8:.4f} | {a4:.4f} "
    f"({100 * (a4 - a8):+.2f} points) |",
  ]
  if arena:
    lines.append(
      f"| LiteRT Micro arena: activations (head) | {arena['head']} | "
      f"{packed['arena_int4']['head']} (cost model: {packed['arena_int4_predicted']}) |"
    )
    lines.append(
      f"| LiteRT Micro arena: total | {arena['total']} | "
      f"{packed['arena_int4']['total']} |"
    )
  lines += [
    "",
    f"The cost model's size ({size} bytes at {widths}: weights, their "
    f"per-channel scales, BatchNorm) against the int4 model's filters and biases: "
    f"{stored4} bytes ({100 * (stored4 - size) / size:+.1f}%). LiteRT Micro's reference "
    "kernels unpack each int4 filter into an int8 scratch buffer in the arena while "
    "its operator runs, so the int4 model needs more activation memory than the int8 "
    "one; the cost model's int4 figure lays those buffers out as its planner does.",
    "",
  ]
  narrow = [
    u for u in c.layers if u.kernel_params and u.weight_bits < export_int4.INT4_BITS
  ]
  if narrow:
    bits = sorted({u.weight_bits for u in narrow})
    weights = sum(u.kernel_params for u in narrow)
    extra = math.ceil(
      sum(u.kernel_params * (export_int4.INT4_BITS - u.weight_bits) for u in narrow) / 8
    )
    lines += [
      f"{len(narrow)} {'layer has' if len(narrow) == 1 else 'layers have'} "
      f"{'/'.join(map(str, bits))}-bit weights ({weights} "
      "weights): LiteRT has no filter type narrower than int4, so they are stored as "
      f"int4, {extra} bytes more than at their own widths; on a device, the cost "
      "model's size holds only with a packed format of that width and kernels that "
      "read it.",
      "",
    ]
  return lines
