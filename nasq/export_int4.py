"""Packed 4-bit weights in a LiteRT flatbuffer: what a 4-bit model stores on a device.

TensorFlow's converter writes every weight as int8, so a network searched under a
budget of 4-bit weights would need twice the flash it was costed at. LiteRT Micro runs
packed 4-bit filters (``kTfLiteInt4``: two values a byte, the even element in the low
nibble) in CONV_2D and DEPTHWISE_CONV_2D with one scale per output channel, and in
FULLY_CONNECTED with one scale per tensor only, which nasq's per-channel classifier
does not have: it stays int8 (its 10 x channels weights are about 1% of a network's).
``to_int4`` rewrites the int8 flatbuffer of ``nasq.export.to_tflite``: the filter of
every convolution whose layer has at most 4-bit weights becomes INT4 holding exactly the QAT model's integers
(after BatchNorm folding, which rescales each output channel: the integers are those
of the fake-quantized kernel, up to the sign of the channel's BatchNorm factor) with
one scale per output channel, and its int32 bias is requantized to the new scale
(input scale x filter scale, as LiteRT requires). Everything else is the int8 model's:
activations, their ranges, the graph. 8-bit layers of a mixed-precision network stay
int8; 2- and 3-bit layers' integers fit in int4.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from nasq import quant
from nasq.export import ExportError, FoldedNetwork

INT4_BITS = 4  # layers of at most this many bits are stored packed

# Where each weighted operator keeps its output channel in the flatbuffer's filter
# layout (CONV_2D: OHWI, DEPTHWISE_CONV_2D: 1HWC, FULLY_CONNECTED: OI).
_OUTPUT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}


def pack_int4(values: np.ndarray) -> bytes:
  """Signed 4-bit integers (in [-8, 7]), two a byte, the even element in the low
  nibble (LiteRT's dense int4 packing); an odd count pads the last high nibble."""
  v = np.asarray(values, np.int64).ravel()
  if v.size and (v.min() < -8 or v.max() > 7):
    raise ValueError(f"int4 values must be in [-8, 7], got [{v.min()}, {v.max()}]")
  nibbles = (v & 0xF).astype(np.uint8)
  if nibbles.size % 2:
    nibbles = np.append(nibbles, np.uint8(0))
  return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_int4(packed: bytes, count: int) -> np.ndarray:
  """The ``count`` signed values of ``pack_int4``'s bytes (int8)."""
  b = np.frombuffer(packed, np.uint8)
  nibbles = np.stack([b & 0xF, b >> 4], axis=1).ravel()[:count].astype(np.int8)
  return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


def _schema():
  try:
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils
  except ImportError as e:
    raise ExportError("the int4 export needs TensorFlow: pip install -e .[export]") from e
  return schema, flatbuffer_utils


def _aligned(model: bytes) -> bytes:
  """The flatbuffer rebuilt by the C++ flatbuffers library, which aligns each buffer
  as the schema asks (16 bytes), as the converter's output is: firmware reads int32
  biases and weights in place."""
  from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

  with tempfile.TemporaryDirectory() as tmp:
    src, dst = os.path.join(tmp, "in.tflite"), os.path.join(tmp, "out.tflite")
    with open(src, "wb") as f:
      f.write(model)
    tflite_flatbuffer_align_wrapper.align_tflite_model(src, dst)
    with open(dst, "rb") as f:
      return f.read()


def weighted_layers(net: FoldedNetwork) -> list[tuple[np.ndarray, np.ndarray, int]]:
  """(kernel, bias, bits) of every weighted operator of ``net``, in graph order: each
  layer's convolutions (a depthwise-separable layer's depthwise one first), then the
  classifier. Kernels as ``fold`` gives them: HWIO (depthwise H, W, 1, C), dense IO."""
  out = [(c.kernel, c.bias, c.bits) for layer in net.layers for c in layer.convs]
  return out + [(net.dense_kernel, net.dense_bias, net.dense_bits)]


def to_int4(model: bytes, net: FoldedNetwork) -> tuple[bytes, list[dict[str, Any]]]:
  """The int8 flatbuffer ``model`` of ``net`` with every <= 4-bit layer's filter packed
  as INT4. Returns the flatbuffer and, per weighted operator, what was stored:
  ``{"op", "bits", "type", "shape", "codes"}`` (``codes``: the integers, in the
  filter's layout)."""
  schema, flatbuffer_utils = _schema()
  obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
  graph = obj.subgraphs[0]
  op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
  weighted = []
  for op in graph.operators:
    code = obj.operatorCodes[op.opcodeIndex]
    name = op_names[max(code.builtinCode, code.deprecatedBuiltinCode)]
    if name in _OUTPUT_AXIS:
      weighted.append((name, op))
  layers = weighted_layers(net)
  if len(weighted) != len(layers):
    raise ExportError(
      f"the flatbuffer has {len(weighted)} weighted operators, the network "
      f"{len(layers)}: it is not this network's int8 model"
    )
  stored = []
  for (name, op), (kernel, bias, bits) in zip(weighted, layers, strict=True):
    filt = graph.tensors[op.inputs[1]]
    if bits > INT4_BITS or name == "FULLY_CONNECTED":
      shape = [int(d) for d in filt.shape]
      stored.append({"op": name, "bits": bits, "type": "int8", "shape": shape})
      continue
    # The QAT integers: the folded kernel is codes x (QAT scale x BatchNorm factor) per
    # output channel, so quantizing it at the same bits returns them (signs follow
    # the BatchNorm factor's).
    codes, scale = quant.quantize(np.asarray(kernel, np.float64), bits)
    codes = np.asarray(codes, np.int64)
    scale = np.asarray(scale, np.float64).reshape(-1)
    if name == "CONV_2D":
      codes = codes.transpose(3, 0, 1, 2)  # HWIO -> OHWI
    elif name == "DEPTHWISE_CONV_2D":
      codes = codes.transpose(2, 0, 1, 3)  # H, W, 1, C -> 1, H, W, C
    elif name == "FULLY_CONNECTED":
      codes = codes.T  # IO -> OI
    shape = [int(d) for d in filt.shape]
    if list(codes.shape) != shape:
      raise ExportError(
        f"{name} filter of shape {shape} does not match the network's "
        f"kernel {list(codes.shape)}: it is not this network's int8 model"
      )
    filt.type = schema.TensorType.INT4
    obj.buffers[filt.buffer].data = np.frombuffer(pack_int4(codes), np.uint8)
    q = filt.quantization
    q.scale = scale.astype(np.float32)
    q.zeroPoint = np.zeros(len(scale), np.int64)
    q.quantizedDimension = _OUTPUT_AXIS[name]
    q.min = q.max = None
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
      # LiteRT requires bias scale = input scale x filter scale, per channel.
      input_scale = float(graph.tensors[op.inputs[0]].quantization.scale[0])
      bias_tensor = graph.tensors[op.inputs[2]]
      bias_scale = input_scale * scale
      values = np.round(np.asarray(bias, np.float64) / bias_scale)
      values = np.clip(values, -(2**31), 2**31 - 1).astype("<i4")
      obj.buffers[bias_tensor.buffer].data = np.frombuffer(values.tobytes(), np.uint8)
      bias_tensor.quantization.scale = bias_scale.astype(np.float32)
      bias_tensor.quantization.zeroPoint = np.zeros(len(scale), np.int64)
    stored.append(
      {"op": name, "bits": bits, "type": "int4", "shape": shape, "codes": codes}
    )
  packed = bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
  return _aligned(packed), stored


def filter_bytes(model: bytes) -> dict[str, int]:
  """Bytes of the weighted operators' filters by storage type (``int4``, ``int8``)
  and of their biases (``bias``), read from the flatbuffer itself."""
  schema, flatbuffer_utils = _schema()
  obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
  graph = obj.subgraphs[0]
  op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
  out = {"int4": 0, "int8": 0, "bias": 0}
  for op in graph.operators:
    code = obj.operatorCodes[op.opcodeIndex]
    if op_names[max(code.builtinCode, code.deprecatedBuiltinCode)] not in _OUTPUT_AXIS:
      continue
    filt = graph.tensors[op.inputs[1]]
    data = obj.buffers[filt.buffer].data
    kind = "int4" if filt.type == schema.TensorType.INT4 else "int8"
    out[kind] += 0 if data is None else len(data)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
      bias = obj.buffers[graph.tensors[op.inputs[2]].buffer].data
      out["bias"] += 0 if bias is None else len(bias)
  return out


def micro_logits(
  model: bytes, images: np.ndarray, arena_size: int = 4 << 20
) -> np.ndarray:
  """Dequantized logits of a flatbuffer under LiteRT Micro's interpreter (the
  ``tflite-micro`` package: its reference kernels, int4 filters included), one image
  at a time (raw pixels [n, H, W, C])."""
  from tflite_micro import runtime

  interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena_size)
  inp, out = interpreter.get_input_details(0), interpreter.get_output_details(0)
  in_scale, in_zero = (
    inp["quantization_parameters"]["scales"][0],
    inp["quantization_parameters"]["zero_points"][0],
  )
  out_scale, out_zero = (
    out["quantization_parameters"]["scales"][0],
    out["quantization_parameters"]["zero_points"][0],
  )
  logits = []
  for image in np.asarray(images, np.float32):
    q = np.clip(np.round(image / in_scale + in_zero), -128, 127).astype(np.int8)
    interpreter.set_input(q[None], 0)
    interpreter.invoke()
    raw = interpreter.get_output(0).astype(np.float32)
    logits.append((raw - out_zero) * out_scale)
  return np.concatenate(logits)
