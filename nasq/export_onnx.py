"""The exported network as an ONNX QDQ model (``model.onnx`` of an export).

int8 kernels (one scale per output channel) enter through DequantizeLinear, and a
QuantizeLinear/DequantizeLinear pair (int8, per tensor, its range calibrated on training
images) stands wherever the int8 LiteRT model quantizes, so onnxruntime computes what the
``.tflite`` does. The graph is written with onnx's own helpers and checked by its
checker; onnx and onnxruntime come with the ``export`` extra.
"""

from __future__ import annotations

import numpy as np

from nasq.export import ExportError, FoldedNetwork, tf_forward
from nasq.quant import nudge_range
from nasq.spaces.macro import WEIGHTED_KINDS


def activation_ranges(
  net: FoldedNetwork, images: np.ndarray
) -> list[tuple[float, float]]:
  """(min, max) of every tensor ``tf_forward`` taps: its learned range (nudged, as the
  int8 converter uses it) where integer-faithful QAT learned one, else its range over
  the calibration images, widened to hold 0 (so 0 is exact, as int8 runtimes need)."""
  taps: list = []
  tf_forward(net, taps)(np.asarray(images, np.float32))
  out = []
  for name, t in taps:
    if name in net.ranges:
      lo, hi, _ = nudge_range(*(np.float32(v) for v in net.ranges[name]))
      out.append((float(lo), float(hi)))
    else:
      out.append((min(float(np.min(t)), 0.0), max(float(np.max(t)), 0.0)))
  return out


def _int8_params(lo: float, hi: float) -> tuple[float, int]:
  scale = max(hi - lo, 1e-8) / 255.0
  return scale, int(np.clip(round(-128 - lo / scale), -128, 127))


def _same_pads(size: tuple[int, int], window: int, stride: int) -> list[int]:
  """TensorFlow/JAX SAME padding as ONNX pads [top, left, bottom, right]."""
  begin, end = [], []
  for n in size:
    total = max((-(-n // stride) - 1) * stride + window - n, 0)
    begin.append(total // 2)
    end.append(total - total // 2)
  return begin + end


def to_onnx(net: FoldedNetwork, calibration_images: np.ndarray, opset: int = 17) -> bytes:
  """An ONNX QDQ model: int8 kernels (one scale per output channel) through
  DequantizeLinear, and a QuantizeLinear/DequantizeLinear pair (int8, per tensor,
  ranges from the calibration images) wherever the int8 LiteRT model quantizes. Its
  input is NHWC raw pixels, as the ``.tflite``'s."""
  try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
  except ImportError as e:
    raise ExportError("exporting ONNX needs onnx: pip install -e .[export]") from e

  ranges = iter(activation_ranges(net, calibration_images))
  nodes, inits = [], []
  count = {"n": 0}

  def name(prefix):
    count["n"] += 1
    return f"{prefix}_{count['n']}"

  def const(prefix, value):
    n = name(prefix)
    inits.append(numpy_helper.from_array(np.asarray(value), n))
    return n

  def node(op, inputs, **attrs):
    out = name(op.lower())
    nodes.append(helper.make_node(op, inputs, [out], **attrs))
    return out

  def qdq(x, lo_hi=None):
    scale, zero = _int8_params(*(lo_hi or next(ranges)))
    s, z = const("scale", np.float32(scale)), const("zero", np.int8(zero))
    return node("DequantizeLinear", [node("QuantizeLinear", [x, s, z]), s, z])

  def weight(w, axis, bits):
    """The kernel's int8 codes (one scale per output channel, ``axis``) through
    DequantizeLinear: a <= 7-bit kernel's QAT integers (the folded kernel is codes x
    scale, see ``export_int4.to_int4``), an 8-bit one's at 7 bits (onnxruntime's
    ``reduce_range``). onnxruntime's int8 convolutions on CPUs without VNNI add pairs
    of uint8 x int8 products in int16, which codes near +-127 saturate: the mixed
    flagship's 8-bit 3x3 stem on raw images cost 0.4 points of test accuracy."""
    qmax = 2 ** (min(int(bits), 7) - 1) - 1
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    absmax = np.max(np.abs(w), axis=reduce, keepdims=True)
    scale = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)
    codes = np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8)
    return node(
      "DequantizeLinear",
      [
        const("w", codes),
        const("w_scale", scale.reshape(-1)),
        const("w_zero", np.zeros(scale.size, np.int8)),
      ],
      axis=axis,
    )

  act = {
    "relu": lambda x: node("Relu", [x]),
    "relu6": lambda x: node(
      "Clip", [x, const("lo", np.float32(0)), const("hi", np.float32(6))]
    ),
    "silu": lambda x: node("Mul", [x, node("Sigmoid", [x])]),
  }[net.activation]

  h, w, c = net.input_shape
  x = node("Transpose", [qdq("image", (0.0, 255.0))], perm=[0, 3, 1, 2])
  a = (1.0 / (255.0 * net.std)).astype(np.float32).reshape(1, c, 1, 1)
  b = (-net.mean / net.std).astype(np.float32).reshape(1, c, 1, 1)
  x = qdq(node("Add", [node("Mul", [x, const("a", a)]), const("b", b)]))
  size = (h, w)
  for layer in net.layers:
    inputs = x
    if layer.kind in WEIGHTED_KINDS:
      for cv in layer.convs:
        k = cv.kernel.shape[0]
        oihw = np.transpose(cv.kernel, (3, 2, 0, 1))  # depthwise: [C, 1, k, k]
        x = node(
          "Conv",
          [x, weight(oihw, 0, cv.bits), const("bias", cv.bias.astype(np.float32))],
          kernel_shape=[k, k],
          strides=[cv.stride] * 2,
          pads=_same_pads(size, k, cv.stride),
          group=oihw.shape[0] if cv.depthwise else 1,
        )
        x = qdq(act(x))
        size = tuple(-(-n // cv.stride) for n in size)
    else:
      attrs = {
        "kernel_shape": [layer.window] * 2,
        "strides": [layer.stride] * 2,
        "pads": _same_pads(size, layer.window, layer.stride),
      }
      if layer.kind == "maxpool":
        x = qdq(node("MaxPool", [x], **attrs))
      else:
        x = qdq(node("AveragePool", [x], count_include_pad=0, **attrs))
      size = tuple(-(-n // layer.stride) for n in size)
    if layer.residual:
      x = qdq(node("Add", [x, inputs]))
  x = qdq(node("Flatten", [node("GlobalAveragePool", [x])]))
  logits = node(
    "Gemm",
    [x, weight(net.dense_kernel, 1, net.dense_bits), const("dense_bias", net.dense_bias)],
  )
  logits = qdq(logits)
  nodes.append(helper.make_node("Identity", [logits], ["logits"]))
  graph = helper.make_graph(
    nodes,
    "nasq",
    [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", h, w, c])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", None])],
    inits,
  )
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
  model.ir_version = min(model.ir_version, 9)
  onnx.checker.check_model(model, full_check=True)
  return model.SerializeToString()


def onnx_logits(model: bytes, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """Logits of the ONNX model under onnxruntime (CPU)."""
  import onnxruntime

  session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
  return np.concatenate(
    [
      session.run(
        ["logits"], {"image": np.asarray(images[i : i + batch_size], np.float32)}
      )[0]
      for i in range(0, len(images), batch_size)
    ]
  )
