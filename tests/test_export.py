"""Export to LiteRT: the folded graph, the int8 model against the QAT model, the C array,
and the errors a user meets."""

import jax
import numpy as np
import pytest

# The export extra (setup.cfg): without it these tests are skipped, so the rest of the
# suite collects and runs; CI installs it, and fails on any skip (tests/conftest.py).
EXPORT_EXTRA = "needs the export extra: pip install -e .[export]"
onnx = pytest.importorskip("onnx", reason=EXPORT_EXTRA)
tf = pytest.importorskip("tensorflow", reason=EXPORT_EXTRA)
Interpreter = pytest.importorskip(
  "ai_edge_litert.interpreter", reason=EXPORT_EXTRA
).Interpreter
pytest.importorskip("onnxruntime", reason=EXPORT_EXTRA)
pytest.importorskip("tflite_micro", reason=EXPORT_EXTRA)

from nasq import (  # noqa: E402
  arena,
  checkpoints,
  costs,
  data,
  export,
  export_int4,
  export_onnx,
  models,
  quant,
  train,
)
from nasq.quant import QuantConfig  # noqa: E402
from nasq.spaces import NB201Space, macro  # noqa: E402


def _arch(text, activation="relu", shape=(12, 12, 1)):
  return macro.space_for_string(text, shape, 10, activation).parse(text)


def _random_variables(arch, bits, seed=0):
  """Initial variables with BatchNorm parameters and statistics far from identity, so
  a wrong fold shows."""
  variables = models.init_variables(
    models.build_model(arch, bits), tuple(arch.input_shape), jax.random.key(seed)
  )
  rng = np.random.default_rng(seed)

  def perturb(tree, low, high):
    return jax.tree.map(
      lambda v: rng.uniform(low, high, v.shape).astype(np.float32), tree
    )

  params = dict(variables["params"])
  for name, p in params.items():
    if "scale" in p:
      params[name] = {"scale": perturb(p["scale"], 0.5, 1.5), "bias": p["bias"] + 0.1}
  stats = {
    name: {"mean": perturb(s["mean"], -0.2, 0.2), "var": perturb(s["var"], 0.5, 2.0)}
    for name, s in variables["batch_stats"].items()
  }
  return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("activation", ["relu", "relu6", "silu"])
def test_the_folded_graph_computes_what_the_qat_model_computes(activation):
  arch = _arch(
    "conv3:s1:c8 dwsep3:s1:c8:res avgpool:s2 dwsep5:s1:c16 maxpool:s2 conv1:s1:c16:res",
    activation,
  )
  variables = _random_variables(arch, 4)
  mean, std = np.array([0.3], np.float32), np.array([0.25], np.float32)
  images = np.random.default_rng(1).integers(0, 256, (8, 12, 12, 1)).astype(np.float32)
  net = export.fold(arch, variables, 4, mean, std)
  got = np.asarray(export.tf_forward(net)(images))
  want = models.build_model(arch, 4).apply(
    variables, train.normalize(images, mean=mean, std=std), train=False
  )
  np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4, atol=1e-4)


def test_activation_fake_quantization_is_tensorflows():
  x = np.random.default_rng(0).normal(0, 2, 20_000).astype(np.float32)
  for lo, hi in [(-1.3, 2.7), (0.0, 6.0), (-5.0, -0.5), (0.3, 2.0), (-0.02, 3.1)]:
    got = quant.fake_quantize_activation(x, np.float32(lo), np.float32(hi))
    want = tf.quantization.fake_quant_with_min_max_args(x, min=lo, max=hi, num_bits=8)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-6)  # same levels
    assert len(np.unique(np.asarray(got))) <= 256
  # The gradient passes inside the (nudged) range, and not outside it.
  grad = jax.grad(lambda v: quant.fake_quantize_activation(v, -1.0, 1.0).sum())(
    np.array([-3.0, -0.5, 0.2, 0.9, 4.0], np.float32)
  )
  np.testing.assert_array_equal(grad, [0, 1, 1, 1, 0])


def test_activation_ranges_follow_the_training_batches():
  q = quant.ActivationQuantizer(momentum=0.5)
  v = q.init(jax.random.key(0), np.zeros((2,), np.float32), train=False)
  assert float(v["batch_stats"]["min"]) == float(v["batch_stats"]["max"]) == 0.0
  x = np.array([0.5, 2.0], np.float32)
  out, v = q.apply(v, x, train=False, mutable=["batch_stats"])
  np.testing.assert_array_equal(out, x)  # no range yet: passed through
  _, v = q.apply(v, x, train=True, mutable=["batch_stats"])  # the first batch: taken
  assert (float(v["batch_stats"]["min"]), float(v["batch_stats"]["max"])) == (0.0, 2.0)
  _, v = q.apply(
    v, np.array([-1.0, 1.0], np.float32), train=True, mutable=["batch_stats"]
  )
  assert (float(v["batch_stats"]["min"]), float(v["batch_stats"]["max"])) == (-0.5, 1.5)


def test_integer_qat_exports_the_network_it_trained():
  arch = _arch(
    "conv3:s1:c8 dwsep3:s1:c8:res avgpool:s2 dwsep5:s1:c16 maxpool:s2 conv1:s1:c16:res"
  )
  model = models.build_model(arch, 4, integer_qat=True)
  variables = models.init_variables(model, (12, 12, 1), jax.random.key(0))
  mean, std = np.array([0.3], np.float32), np.array([0.25], np.float32)
  rng = np.random.default_rng(1)
  stats = variables["batch_stats"]
  for _ in range(3):  # training batches set the statistics and the ranges
    batch = rng.integers(0, 256, (16, 12, 12, 1)).astype(np.float32)
    _, updates = model.apply(
      {"params": variables["params"], "batch_stats": stats},
      train.normalize(batch, mean=mean, std=std),
      train=True,
      mutable=["batch_stats"],
    )
    stats = updates["batch_stats"]
  variables = {"params": variables["params"], "batch_stats": stats}
  net = export.fold(arch, variables, 4, mean, std)
  assert set(net.ranges) == {k for k in stats if k.endswith("_aq")}
  assert len(net.ranges) == 11  # input, 1 + 2 + 2 + 1 layer outputs, 2 sums, head
  images = rng.integers(0, 256, (64, 12, 12, 1)).astype(np.float32)
  got = np.asarray(export.tf_forward(net)(images))
  want = np.asarray(
    model.apply(variables, train.normalize(images, mean=mean, std=std), train=False)
  )
  # Both compute on the same 8-bit grids; a value on a rounding boundary can land one
  # level apart (the two convolutions sum in different orders) and carry on.
  lo, hi = net.ranges["logits_aq"]
  step = (hi - lo) / 255
  diff = np.abs(got - want)
  assert np.median(diff) < 1e-5 and diff.max() <= 3 * step + 1e-5


@pytest.mark.parametrize("integer_qat", [False, True], ids=["weights", "integer"])
def test_int8_tflite_keeps_the_accuracy_of_a_trained_model(integer_qat):
  # Real Fashion-MNIST: a small 4-bit QAT network trained briefly.
  ds = data.load_dataset(data.DataConfig(train_size=4000, test_size=1000, val_size=500))
  arch = _arch(
    "conv3:s2:c16 dwsep3:s1:c16:res conv3:s2:c32 maxpool:s2", shape=(28, 28, 1)
  )
  config = train.TrainConfig(epochs=2, batch_size=64, eval_batch_size=500, progress=False)
  result = train.train_and_evaluate(arch, QuantConfig(4, 8, integer_qat), ds, config)
  assert result.status == "ok"
  net = export.fold(arch, result.variables, 4, ds.mean, ds.std)
  assert bool(net.ranges) == integer_qat
  model = export.to_tflite(net, ds.train.images[:200])
  logits = export.tflite_logits(model, ds.test.images)
  int8 = np.argmax(logits, -1)
  jax_acc = export.jax_accuracy(
    arch, 4, result.variables, ds.test.images, ds.test.labels, net, integer_qat
  )
  if integer_qat:  # the converter took the learned range of the logits
    out = Interpreter(model_content=model).get_output_details()[0]
    lo, hi, scale = quant.nudge_range(*(np.float32(v) for v in net.ranges["logits_aq"]))
    assert out["quantization"][0] == pytest.approx(float(scale), rel=1e-6)
  assert jax_acc > 0.6  # it learned something, so agreement is not between two guesses
  int8_acc = float(np.mean(int8 == ds.test.labels))
  assert abs(int8_acc - jax_acc) <= 0.01
  onnx_model = export_onnx.to_onnx(net, ds.train.images[:200])
  onnx_pred = np.argmax(export_onnx.onnx_logits(onnx_model, ds.test.images), -1)
  assert abs(float(np.mean(onnx_pred == ds.test.labels)) - jax_acc) <= 0.01
  graph = onnx.load_from_string(onnx_model)
  assert graph.opset_import[0].version >= 13
  ops = {n.op_type for n in graph.graph.node}
  assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
  stored = [i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.INT8]
  assert sum(int(np.prod(i.dims)) for i in stored if len(i.dims) >= 2) == (
    sum(c.kernel.size for layer in net.layers for c in layer.convs)
    + net.dense_kernel.size
  )
  summary = export.tflite_summary(model)
  assert set(summary["operators"]) <= {
    "ADD",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
    "MEAN",
    "MUL",
    "QUANTIZE",
    "DEQUANTIZE",
  }, summary["operators"]
  # Every kernel weight is stored once, as one int8 byte.
  kernels = sum(c.kernel.size for layer in net.layers for c in layer.convs)
  assert summary["weight_bytes"] == kernels + net.dense_kernel.size
  # The int4 model, run by LiteRT Micro, classifies as the int8 one does.
  packed, _ = export_int4.to_int4(model, net)
  images, labels = ds.test.images[:300], ds.test.labels[:300]
  micro8 = np.argmax(export_int4.micro_logits(model, images), -1)
  micro4 = np.argmax(export_int4.micro_logits(packed, images), -1)
  acc8, acc4 = float(np.mean(micro8 == labels)), float(np.mean(micro4 == labels))
  assert (
    abs(acc4 - acc8) <= 0.02 and abs(acc8 - float(np.mean(int8[:300] == labels))) <= 0.02
  )
  assert float(np.mean(micro4 == micro8)) >= 0.95


def test_c_array_holds_the_flatbuffer_bytes():
  blob = bytes(range(256)) * 3 + b"\x01\x02"
  source, header = export.c_array(blob)
  assert export.parse_c_array(source) == blob
  assert f"g_model_data_len = {len(blob)};" in source
  assert (
    "alignas(16)" in source and "extern const unsigned char g_model_data[];" in header
  )


def test_unsupported_architectures_are_named():
  cell = NB201Space().sample(np.random.default_rng(0))
  with pytest.raises(export.ExportError, match="macro space; got NB201Architecture"):
    export.fold(cell, {}, 8, 0.5, 0.5)


def test_a_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
  small = _arch("conv3:s1:c8")
  checkpoints.save_checkpoint(str(tmp_path / "ckpt"), _random_variables(small, 8))
  other = _arch("conv3:s1:c8 conv3:s1:c16")
  with pytest.raises(export.ExportError, match="does not load as"):
    export.load_checkpoint(other, 8, tmp_path / "ckpt")
  with pytest.raises(export.ExportError, match="no checkpoint at"):
    export.load_checkpoint(other, 8, tmp_path / "missing")


def test_an_interrupted_export_leaves_the_previous_one_whole(tmp_path):
  out = tmp_path / "export"
  export.write_atomically(out, {"model.tflite": b"old", "export_report.md": "old"})
  with pytest.raises(TypeError):
    export.write_atomically(out, {"model.tflite": b"new", "export_report.md": 3})
  assert (out / "model.tflite").read_bytes() == b"old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_onnx_kernels_hold_the_qat_integers_at_their_own_width():
  """Each kernel's int8 codes are its QAT integers (2-bit: -1, 0, 1), not spread over
  int8's range, and an 8-bit kernel's are at 7 bits: onnxruntime's int8 convolutions
  on CPUs without VNNI sum pairs of uint8 x int8 products in int16, which codes near
  +-127 saturate."""
  arch = _arch("conv3:s1:c8:w2 dwsep3:s2:c16:w4 conv3:s1:c12:w8 conv1:s1:c8:w4")
  variables = _random_variables(arch, 4)
  images = np.random.default_rng(0).integers(0, 256, (8, 12, 12, 1)).astype(np.float32)
  net = export.fold(arch, variables, 4, 0.5, 0.25)
  graph = onnx.load_from_string(export_onnx.to_onnx(net, images)).graph
  values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
  dequantize = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
  stored = []
  for n in graph.node:
    if n.op_type in ("Conv", "Gemm"):
      d = dequantize[n.input[1]]
      (axis,) = [a.i for a in d.attribute if a.name == "axis"]
      stored.append((values[d.input[0]], values[d.input[1]], axis))
  convs = [c for layer in net.layers for c in layer.convs]
  kernels = [np.transpose(c.kernel, (3, 2, 0, 1)) for c in convs] + [net.dense_kernel]
  bits = [c.bits for c in convs] + [net.dense_bits]
  assert bits == [2, 4, 4, 8, 4, 4]
  for (codes, scale, axis), kernel, b in zip(stored, kernels, bits, strict=True):
    assert codes.dtype == np.int8 and np.abs(codes).max() == 2 ** (min(b, 7) - 1) - 1
    shape = [1] * codes.ndim
    shape[axis] = -1
    dequantized = codes * scale.reshape(shape)
    if b < 8:  # exact
      np.testing.assert_allclose(dequantized, kernel, rtol=1e-5, atol=1e-7)
    else:  # within half a 7-bit step of each channel's
      step = np.max(np.abs(kernel), axis=(1, 2, 3), keepdims=True) / 63
      assert np.all(np.abs(dequantized - kernel) <= step / 2 + 1e-7)


@pytest.mark.parametrize(
  "text",
  [
    "conv3:s1:c8 maxpool:s2 conv3:s1:c16",
    "conv3:s2:c8 dwsep3:s1:c8:res avgpool:s1 conv1:s1:c16",
    "conv3:s1:c8 conv3:s1:c8:res maxpool:s2 dwsep5:s1:c16",
    "conv3:s1:c8 dwsep3:s1:c8:res dwsep3:s1:c8:res",  # the planner fragments
  ],
)
def test_cost_model_peak_memory_is_the_micro_runtimes_activation_arena(text):
  arch = _arch(text)
  net = export.fold(arch, _random_variables(arch, 8), 8, 0.5, 0.25)
  images = np.random.default_rng(0).integers(0, 256, (4, 12, 12, 1)).astype(np.float32)
  arena = export.micro_arena(export.to_tflite(net, images))
  assert costs.compute_costs(arch, 8, 8).peak_activation_bytes == arena["head"]


def test_int4_packing_puts_the_even_element_in_the_low_nibble():
  # By hand: 1 -> 0x1, -1 -> 0xF, 7 -> 0x7, -8 -> 0x8, odd count padded with 0.
  assert export_int4.pack_int4(np.array([1, -1, 7, -8, 3])) == bytes([0xF1, 0x87, 0x03])
  values = np.random.default_rng(0).integers(-8, 8, 101)
  np.testing.assert_array_equal(
    export_int4.unpack_int4(export_int4.pack_int4(values), 101), values
  )
  with pytest.raises(ValueError, match="int4 values must be in"):
    export_int4.pack_int4(np.array([8]))


def _flatbuffer_filters(model):
  """(operator name, filter type, filter values as integers) of every weighted
  operator, read back from the flatbuffer."""
  from tensorflow.lite.python import schema_py_generated as schema
  from tensorflow.lite.tools import flatbuffer_utils

  obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
  graph = obj.subgraphs[0]
  names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
  out = []
  for op in graph.operators:
    code = obj.operatorCodes[op.opcodeIndex]
    name = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
    if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
      continue
    t = graph.tensors[op.inputs[1]]
    raw = bytes(obj.buffers[t.buffer].data)
    count = int(np.prod(t.shape))
    if t.type == schema.TensorType.INT4:
      values = export_int4.unpack_int4(raw, count).reshape(t.shape)
    else:
      values = np.frombuffer(raw, np.int8).reshape(t.shape)
    out.append((name, "int4" if t.type == schema.TensorType.INT4 else "int8", values))
  return out


def test_int4_filters_hold_the_qat_integers_and_8_bit_layers_stay_int8():
  arch = _arch("conv3:s1:c8:w2 dwsep3:s2:c16:w4 conv3:s1:c12:w8 conv1:s1:c8:w4")
  variables = _random_variables(arch, 4)
  images = np.random.default_rng(0).integers(0, 256, (8, 12, 12, 1)).astype(np.float32)
  net = export.fold(arch, variables, 4, 0.5, 0.25)
  packed, _ = export_int4.to_int4(export.to_tflite(net, images), net)
  params, stats = variables["params"], variables["batch_stats"]

  def integers(module, bn, bits, layout):
    # From the trained parameters, not the folded network: the QAT codes, signed by
    # BatchNorm's factor (a negative factor flips the channel).
    codes, _ = quant.quantize(np.asarray(params[module]["kernel"], np.float64), bits)
    factor = np.asarray(params[bn]["scale"]) / np.sqrt(
      np.asarray(stats[bn]["var"]) + 1e-5
    )
    return np.transpose(np.asarray(codes) * np.sign(factor), layout)

  filters = _flatbuffer_filters(packed)
  assert [(name, kind) for name, kind, _ in filters] == [
    ("CONV_2D", "int4"),  # 2-bit
    ("DEPTHWISE_CONV_2D", "int4"),
    ("CONV_2D", "int4"),  # its pointwise, 4-bit
    ("CONV_2D", "int8"),  # the 8-bit layer
    ("CONV_2D", "int4"),
    ("FULLY_CONNECTED", "int8"),  # LiteRT Micro: int4 FC only with one scale
  ]
  ohwi = (3, 0, 1, 2)
  np.testing.assert_array_equal(
    filters[0][2], integers("layer0_conv", "layer0_bn", 2, ohwi)
  )
  np.testing.assert_array_equal(
    filters[1][2], integers("layer1_dw", "layer1_dw_bn", 4, (2, 0, 1, 3))
  )
  np.testing.assert_array_equal(
    filters[2][2], integers("layer1_pw", "layer1_pw_bn", 4, ohwi)
  )
  np.testing.assert_array_equal(
    filters[4][2], integers("layer3_conv", "layer3_bn", 4, ohwi)
  )
  assert np.abs(filters[0][2]).max() <= 1 and np.abs(filters[1][2]).max() <= 7
  # Its filters take half a byte per weight, the rest as before.
  sizes = export_int4.filter_bytes(packed)
  assert sizes["int4"] == sum((n + 1) // 2 for n in (72, 72, 8 * 16, 12 * 8))
  assert sizes["int8"] == 9 * 16 * 12 + 8 * 10


@pytest.mark.parametrize(
  "text",
  [
    "conv3:s1:c8 maxpool:s2 conv3:s1:c16",
    "conv3:s2:c8 dwsep3:s1:c8:res avgpool:s1 conv1:s1:c16",
    "conv3:s1:c8:w8 dwsep5:s1:c16:w4 conv3:s1:c16:w2",
  ],
)
def test_cost_model_predicts_the_int4_models_arena(text):
  """LiteRT Micro unpacks each int4 filter into a scratch buffer in the arena."""
  arch = _arch(text)
  net = export.fold(arch, _random_variables(arch, 4), 4, 0.5, 0.25)
  images = np.random.default_rng(0).integers(0, 256, (4, 12, 12, 1)).astype(np.float32)
  packed, _ = export_int4.to_int4(export.to_tflite(net, images), net)
  measured = export.micro_arena(packed)["head"]
  assert arena.macro_arena_bytes(arch, 8, 4) == measured
  assert measured >= arena.macro_arena_bytes(arch, 8)
