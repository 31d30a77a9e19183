"""Export a trained network of the macro space for devices.

A search's best model (or any checkpoint of ``nasq.train``) becomes:

* ``model.tflite``: full-integer int8 LiteRT flatbuffer (int8 weights per output channel,
  int8 activations, int32 biases), built by TensorFlow's converter from a TensorFlow
  graph of the network with its BatchNorms folded into the preceding convolutions and its
  input normalization inside the graph, so the device feeds raw pixels (0..255, int8
  with zero point -128);
* ``model_data.cc`` / ``model_data.h``: that flatbuffer as a C array for firmware;
* ``model.onnx``: the same network as an ONNX QDQ model (opset 17; int8 kernels per
  output channel through DequantizeLinear, a QuantizeLinear/DequantizeLinear pair
  wherever the int8 model quantizes), for onnxruntime and the toolchains that read it;
* ``export_report.md``: the test accuracy of the JAX QAT model and of the ``.tflite``
  under the LiteRT interpreter and of the ``.onnx`` under onnxruntime, and the exported
  weight bytes against the cost model.

The exported kernels are the QAT model's fake-quantized kernels times the folded
BatchNorm scale, requantized by the converter to int8 per output channel: in
``model.tflite`` a 4-bit model is stored at int8, on a grid finer than its 4-bit one;
``nasq.export_int4`` packs those layers as int4, with their QAT integers
(``model_int4.tflite``). TensorFlow, ai-edge-litert, onnx, onnxruntime and
tflite-micro come with the ``export`` extra (``pip install -e .[export]``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nasq import atomic, checkpoints, models, quant
from nasq import costs as costs_lib
from nasq import data as data_lib
from nasq import train as train_lib
from nasq.spaces.macro import WEIGHTED_KINDS, MacroArchitecture

BN_EPSILON = 1e-5  # nasq.models.BatchNorm's
ACTIVATIONS = ("relu", "relu6", "silu")


class ExportError(ValueError):
  """The model cannot be exported (an unsupported layer, a checkpoint that does not
  load); the message names what and why."""


@dataclasses.dataclass(frozen=True)
class FoldedConv:
  """A convolution with its BatchNorm folded in: y = act(conv(x, kernel) + bias)."""

  kernel: np.ndarray  # HWIO (depthwise: H, W, 1, C)
  bias: np.ndarray
  stride: int
  depthwise: bool
  bits: int = 8  # the QAT weight bits of this kernel (its integers' range)


@dataclasses.dataclass(frozen=True)
class FoldedLayer:
  kind: str  # "conv", "dwsep", "maxpool", "avgpool"
  convs: tuple[FoldedConv, ...]  # conv: 1; dwsep: depthwise then pointwise; pool: 0
  window: int
  stride: int
  residual: bool


@dataclasses.dataclass(frozen=True)
class FoldedNetwork:
  """Everything the exported graph computes, in float: normalization, layers, head."""

  input_shape: tuple[int, int, int]
  mean: np.ndarray  # per input channel, in [0, 1] pixel units (nasq.train.normalize)
  std: np.ndarray
  activation: str
  layers: tuple[FoldedLayer, ...]
  dense_kernel: np.ndarray
  dense_bias: np.ndarray
  dense_bits: int = 8
  # Learned 8-bit ranges by tap name (integer-faithful QAT), honoured by the export;
  # empty: every range is calibrated on images.
  ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


def _check_exportable(arch: Any) -> MacroArchitecture:
  if not isinstance(arch, MacroArchitecture):
    raise ExportError(
      f"export supports architectures of the macro space; got {type(arch).__name__} "
      "(NAS-Bench-201 cells are benchmark tables, not deployment targets)"
    )
  if arch.activation not in ACTIVATIONS:
    raise ExportError(
      f"activation {arch.activation!r} cannot be exported; supported: {list(ACTIVATIONS)}"
    )
  for i, layer in enumerate(arch.layers):
    if layer.kind not in (*WEIGHTED_KINDS, "maxpool", "avgpool"):
      raise ExportError(f"layer {i} ({layer.kind!r}) has no exporter")
  return arch


def fold(
  arch: MacroArchitecture,
  variables: dict[str, Any],
  weight_bits: int,
  mean: Any,
  std: Any,
) -> FoldedNetwork:
  """The network of ``variables`` (trained at ``weight_bits``) with fake-quantized
  kernels and BatchNorm (running statistics) folded into each convolution (exact: the
  per-channel weight scales absorb BatchNorm's per-channel factor, see
  ``nasq.quant.QuantConfig``), and the learned activation ranges (``*_aq``) of
  integer-faithful QAT, if any."""
  arch = _check_exportable(arch)
  params = variables["params"]
  stats = variables.get("batch_stats", {})
  bits = costs_lib.kernel_modules_bits(arch, weight_bits)
  ranges = {
    name: (float(v["min"]), float(v["max"]))
    for name, v in stats.items()
    if name.endswith("_aq")
  }

  def conv(name: str, bn: str, stride: int, depthwise: bool) -> FoldedConv:
    try:
      kernel = np.asarray(params[name]["kernel"], np.float32)
      scale, shift = (np.asarray(params[bn][k], np.float32) for k in ("scale", "bias"))
      mu, var = (np.asarray(stats[bn][k], np.float32) for k in ("mean", "var"))
    except KeyError as e:
      raise ExportError(
        f"the checkpoint has no {e.args[0]!r} for layer {name!r}: it does not belong "
        "to this architecture"
      ) from None
    kernel = np.asarray(quant.fake_quantize(kernel, bits[name]), np.float32)
    mul = scale / np.sqrt(var + BN_EPSILON)
    return FoldedConv(kernel * mul, shift - mu * mul, stride, depthwise, bits[name])

  layers = []
  for i, layer in enumerate(arch.layers):
    if layer.kind == "conv":
      convs = (conv(f"layer{i}_conv", f"layer{i}_bn", layer.stride, False),)
    elif layer.kind == "dwsep":
      convs = (
        conv(f"layer{i}_dw", f"layer{i}_dw_bn", layer.stride, True),
        conv(f"layer{i}_pw", f"layer{i}_pw_bn", 1, False),
      )
    else:
      convs = ()
    layers.append(
      FoldedLayer(layer.kind, convs, layer.kernel_size, layer.stride, layer.residual)
    )
  dense = params["classifier"]
  return FoldedNetwork(
    tuple(arch.input_shape),
    np.broadcast_to(np.asarray(mean, np.float32), (arch.input_shape[2],)).copy(),
    np.broadcast_to(np.asarray(std, np.float32), (arch.input_shape[2],)).copy(),
    arch.activation,
    tuple(layers),
    np.asarray(quant.fake_quantize(np.asarray(dense["kernel"]), bits["classifier"])),
    np.asarray(dense["bias"], np.float32),
    bits["classifier"],
    ranges,
  )


# --- TensorFlow graph and LiteRT conversion ---------------------------------------------


def _tf():
  try:
    import tensorflow as tf
  except ImportError as e:
    raise ExportError(
      "exporting needs TensorFlow: pip install -e .[export] (tensorflow-cpu, "
      "ai-edge-litert)"
    ) from e
  return tf


def tf_forward(net: FoldedNetwork, taps: list | None = None):
  """A function of raw pixels [n, H, W, C] (float, 0..255) to logits, in TensorFlow.
  With ``taps``, each call appends (name, tensor) for every tensor an int8 model
  quantizes, in order (the normalized input, every layer's outputs, the pooled
  features, the logits). A tensor with a learned range (``net.ranges``) passes through
  TensorFlow's FakeQuant op there, whose range the int8 converter then uses."""
  tf = _tf()
  act = {
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "silu": lambda v: v * tf.sigmoid(v),
  }[net.activation]
  a = (1.0 / (255.0 * net.std)).astype(np.float32)
  b = (-net.mean / net.std).astype(np.float32)

  def tap(x, name):
    if name in net.ranges:
      lo, hi = net.ranges[name]
      x = tf.quantization.fake_quant_with_min_max_args(x, min=lo, max=hi, num_bits=8)
    if taps is not None:
      taps.append((name, x))
    return x

  def conv(x, c: FoldedConv, name: str):
    strides = (1, c.stride, c.stride, 1)
    if c.depthwise:
      kernel = np.transpose(c.kernel, (0, 1, 3, 2))  # H, W, C, multiplier 1
      y = tf.nn.depthwise_conv2d(x, kernel, strides, "SAME")
    else:
      y = tf.nn.conv2d(x, c.kernel, strides, "SAME")
    return tap(act(tf.nn.bias_add(y, c.bias)), name)

  def forward(images):
    x = tap(images * a + b, "input_aq")
    for i, layer in enumerate(net.layers):
      inputs = x
      if layer.kind == "conv":
        x = conv(x, layer.convs[0], f"layer{i}_aq")
      elif layer.kind == "dwsep":
        x = conv(x, layer.convs[0], f"layer{i}_dw_aq")
        x = conv(x, layer.convs[1], f"layer{i}_pw_aq")
      else:
        pool = tf.nn.max_pool2d if layer.kind == "maxpool" else tf.nn.avg_pool2d
        x = tap(pool(x, layer.window, layer.stride, "SAME"), f"layer{i}_pool")
      if layer.residual:
        x = tap(x + inputs, f"layer{i}_res_aq")
    x = tap(tf.reduce_mean(x, axis=(1, 2)), "features_aq")
    return tap(tf.matmul(x, net.dense_kernel) + net.dense_bias, "logits_aq")

  return forward


def to_tflite(net: FoldedNetwork, calibration_images: np.ndarray) -> bytes:
  """Full-integer int8 flatbuffer; activation ranges calibrated on the given images
  (raw pixels [n, H, W, C]), one at a time, as the converter expects."""
  tf = _tf()
  forward = tf_forward(net)
  spec = tf.TensorSpec((1, *net.input_shape), tf.float32)
  module = tf.Module()
  module.f = tf.function(forward, input_signature=[spec])
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
    [module.f.get_concrete_function()], module
  )
  images = np.asarray(calibration_images, np.float32)

  def representative():
    for img in images:
      yield [img[None]]

  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = representative
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  converter.inference_input_type = tf.int8
  converter.inference_output_type = tf.int8
  return converter.convert()


def tflite_logits(model: bytes, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """Dequantized logits of the int8 model under the LiteRT interpreter."""
  from ai_edge_litert.interpreter import Interpreter

  interpreter = Interpreter(model_content=model)
  inp = interpreter.get_input_details()[0]
  out = interpreter.get_output_details()[0]
  (in_scale, in_zero), (out_scale, out_zero) = inp["quantization"], out["quantization"]
  results = []
  resized = None
  for start in range(0, len(images), batch_size):
    chunk = np.asarray(images[start : start + batch_size], np.float32)
    if resized != len(chunk):
      interpreter.resize_tensor_input(inp["index"], [len(chunk), *chunk.shape[1:]])
      interpreter.allocate_tensors()
      resized = len(chunk)
    q = np.clip(np.round(chunk / in_scale + in_zero), -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], q)
    interpreter.invoke()
    raw = interpreter.get_tensor(out["index"]).astype(np.float32)
    results.append((raw - out_zero) * out_scale)
  return np.concatenate(results)


def tflite_summary(model: bytes) -> dict[str, Any]:
  """Operators and constant bytes of a flatbuffer: int8 weights, int32 biases. The
  constants are the operator inputs that no operator produces and the graph does not
  take as input."""
  from ai_edge_litert.interpreter import Interpreter

  interpreter = Interpreter(model_content=model)
  ops = interpreter._get_ops_details()
  produced = {i for op in ops for i in op["outputs"]}
  produced |= {t["index"] for t in interpreter.get_input_details()}
  constants = {i for op in ops for i in op["inputs"]} - produced
  weight_bytes = bias_bytes = 0
  for t in interpreter.get_tensor_details():
    if t["index"] not in constants:
      continue
    nbytes = int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize
    if t["dtype"] == np.int8 and len(t["shape"]) >= 2:
      weight_bytes += nbytes
    elif t["dtype"] == np.int32 and len(t["shape"]) == 1:
      bias_bytes += nbytes
  return {
    "operators": sorted({op["op_name"] for op in ops}),
    "weight_bytes": weight_bytes,
    "bias_bytes": bias_bytes,
  }


# --- LiteRT Micro arena ------------------------------------------------------------------

_ARENA_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def micro_arena(model: bytes, arena_size: int = 4 << 20) -> dict[str, int]:
  """The tensor arena LiteRT Micro (the ``tflite-micro`` package's interpreter) uses
  for one inference: ``head`` (activation buffers, planned by its memory planner),
  ``tail`` (persistent runtime data) and ``total``, in bytes."""
  try:
    from tflite_micro import runtime
  except ImportError as e:
    raise ExportError(
      "measuring the arena needs tflite-micro: pip install -e .[export]"
    ) from e
  interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena_size)
  details = interpreter.get_input_details(0)
  interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
  interpreter.invoke()
  # The recording allocator prints to the process's stderr (C++): capture the fd.
  with tempfile.TemporaryFile() as captured:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
      os.dup2(captured.fileno(), 2)
      interpreter.print_allocations()
    finally:
      os.dup2(saved, 2)
      os.close(saved)
    captured.seek(0)
    text = captured.read().decode(errors="replace")
  found = {k: int(v) for k, v in _ARENA_LINE.findall(text)}
  if set(found) != {"total", "head", "tail"}:
    raise RuntimeError(f"unexpected LiteRT Micro allocation report: {text[:500]!r}")
  return found


# --- C array ----------------------------------------------------------------------------


def c_array(model: bytes, name: str = "g_model_data") -> tuple[str, str]:
  """(``model_data.cc``, ``model_data.h``): the flatbuffer as a 16-byte aligned array."""
  header = (
    "// Generated by nasq.export: the LiteRT flatbuffer of a nasq model.\n"
    "#pragma once\n\n"
    f"extern const unsigned char {name}[];\n"
    f"extern const unsigned int {name}_len;\n"
  )
  rows = [
    "  " + ", ".join(f"0x{b:02x}" for b in model[i : i + 12]) + ","
    for i in range(0, len(model), 12)
  ]
  source = (
    '#include "model_data.h"\n\n'
    f"alignas(16) const unsigned char {name}[] = {{\n"
    + "\n".join(rows)
    + f"\n}};\nconst unsigned int {name}_len = {len(model)};\n"
  )
  return source, header


def parse_c_array(source: str) -> bytes:
  """The bytes of a ``c_array`` source (for checks)."""
  body = source[source.index("{") + 1 : source.index("};")]
  return bytes(int(v, 16) for v in body.replace("\n", " ").split(",") if v.strip())


# --- the workdir entry point ------------------------------------------------------------


def write_atomically(directory: Path, files: dict[str, bytes | str]) -> None:
  """Writes every file into a temporary sibling directory, then renames it into place,
  so an interrupted export leaves the previous export (or nothing), never half of one."""
  with atomic.atomic_directory(directory) as tmp:
    for name, content in files.items():
      mode = "wb" if isinstance(content, bytes) else "w"
      with open(tmp / name, mode) as f:
        f.write(content)


def load_checkpoint(
  arch: Any, weight_bits: int, path: str | Path, integer_qat: bool = False
) -> dict[str, Any]:
  """Variables of ``arch`` restored from an orbax checkpoint, or an ``ExportError``
  naming the checkpoint and what is wrong with it."""
  path = Path(path)
  if not path.exists():
    raise ExportError(f"no checkpoint at {path}")
  model = models.build_model(arch, weight_bits, integer_qat=integer_qat)
  like = models.init_variables(model, tuple(arch.input_shape), jax.random.key(0))
  try:
    return checkpoints.load_checkpoint(str(path), like)
  except Exception as e:  # orbax raises many types for unreadable or mismatched data
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ExportError(
      f"checkpoint {path} does not load as {arch.to_string()!r}: {first[:300]}"
    ) from e


class _Variables(NamedTuple):
  """What ``nasq.train.eval_step`` reads of a training state."""

  params: Any
  batch_stats: Any


def jax_accuracy(
  arch: MacroArchitecture,
  weight_bits: int,
  variables: dict[str, Any],
  images: np.ndarray,
  labels: np.ndarray,
  net: FoldedNetwork,
  integer_qat: bool = False,
  batch_size: int = 500,
) -> float:
  """Test accuracy of the QAT model itself (Flax, inference mode), the export's
  reference, by the evaluation training uses (``nasq.train.evaluate``)."""
  model = models.build_model(arch, weight_bits, integer_qat=integer_qat)
  state = _Variables(variables["params"], variables.get("batch_stats", {}))
  eval_fn = jax.jit(
    functools.partial(
      train_lib.eval_step,
      model=model,
      mean=jnp.asarray(net.mean),
      std=jnp.asarray(net.std),
    )
  )
  split = data_lib.Split(np.asarray(images), np.asarray(labels, np.int32))
  accuracy, _ = train_lib.evaluate(state, split, eval_fn, batch_size)
  return accuracy
