"""Costs against independent counts: the built Flax model, the traced forward pass,
hand-derived figures and NAS-Bench-201's published numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasq import arena, costs
from nasq.models import build_model
from nasq.spaces import MacroSpace, NB201Space, NB201SpaceConfig, macro


def _sub_jaxprs(eqn):
  for v in eqn.params.values():
    for item in v if isinstance(v, (list, tuple)) else [v]:
      if hasattr(item, "eqns"):
        yield item
      elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
        yield item.jaxpr


def _is_depthwise(eqn) -> bool:
  """A call of ``nasq.ops.depthwise_conv`` (a custom VJP of input x [n, h, w, C] and
  kernel [k, k, 1, C] giving [n, h', w', C]), whose taps are elementwise products."""
  if eqn.primitive.name != "custom_vjp_call" or len(eqn.invars) != 2:
    return False
  x, kernel = (v.aval.shape for v in eqn.invars)
  out = eqn.outvars[0].aval.shape
  return len(kernel) == 4 and kernel[2] == 1 and x[-1] == kernel[3] == out[-1]


def traced_macs(jaxpr) -> int:
  """MACs of every convolution and matmul in a jaxpr (batch 1), from shapes alone."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if _is_depthwise(eqn):  # one multiply-accumulate per tap and output element
      kh, kw, _, _ = eqn.invars[1].aval.shape
      total += int(np.prod(eqn.outvars[0].aval.shape)) * kh * kw
      continue
    if name == "conv_general_dilated":
      out = eqn.outvars[0].aval.shape  # NHWC
      kh, kw, cin_per_group, _ = eqn.invars[1].aval.shape  # HWIO
      total += int(np.prod(out)) * kh * kw * cin_per_group
    elif name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += int(np.prod(eqn.outvars[0].aval.shape)) * int(
        np.prod([lhs[d] for d in contract])
      )
    for sub in _sub_jaxprs(eqn):
      total += traced_macs(sub)
  return total


def model_counts(arch, bits):
  """(params, MACs) of the built model, from one trace of its initialization, which runs
  the forward pass in inference mode on one image."""
  model = build_model(arch, bits)
  closed, shapes = jax.make_jaxpr(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, *arch.input_shape)), train=False),
    return_shape=True,
  )()
  params = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes["params"]))
  return params, traced_macs(closed.jaxpr)


def covering(space, archs):
  """The first of ``archs`` and every later one whose tokens add something unseen: a
  token value at its position, or a pair of adjacent token values there."""
  seen, keep = set(), []
  for a in archs:
    t = [int(x) for x in space.encode(a)]
    pairs = ((i, t[i], t[i + 1]) for i in range(len(t) - 1))
    new = {*enumerate(t), *pairs} - seen
    if new or not keep:
      keep.append(a)
      seen |= new
  return keep


@pytest.mark.parametrize(
  "space, count", [(MacroSpace(), 500), (NB201Space(), 150)], ids=["macro", "nb201"]
)
def test_params_and_macs_match_the_model_on_random_architectures(space, count):
  # Tracing a model is the cost: of ``count`` random architectures, those that add a
  # token or adjacent token pair the ones before them lack (124 of 500 macro networks,
  # 55 of 150 cells) are traced; they hold every choice the others hold.
  rng = np.random.default_rng(0)
  traced = covering(space, [space.sample(rng) for _ in range(count)])
  assert len(traced) < count / 2  # the subset is what saves the time
  for arch in traced:
    c = costs.compute_costs(arch, 4)
    assert model_counts(arch, 4) == (c.params, c.macs), arch.to_string()


def test_mixed_precision_space_params_and_sizes():
  space = MacroSpace(macro.MacroSpaceConfig(weight_bits_choices=(2, 4, 8)))
  rng = np.random.default_rng(1)
  for _ in range(20):
    arch = space.sample(rng)
    c = costs.compute_costs(arch, 8)
    assert model_counts(arch, 8) == (c.params, c.macs)
  # By hand: a 2-bit 3x3 convolution (1 -> 8), an 8-bit depthwise-separable layer
  # (8 -> 16), the classifier at the model-wide 8 bits. Kernels at their bits, one
  # float32 scale per output channel, BatchNorm's scale and bias and the classifier's
  # bias in float32.
  text = "conv3:s1:c8:w2 dwsep3:s1:c16:w8"
  arch = macro.space_for_string(text, (4, 4, 1), 10).parse(text)
  conv = 72 * 2 + 8 * 32 + 16 * 32
  depthwise = 72 * 8 + 8 * 32 + 16 * 32
  pointwise = 128 * 8 + 16 * 32 + 32 * 32
  classifier = 160 * 8 + 10 * 32 + 10 * 32
  expected = conv + depthwise + pointwise + classifier
  assert expected == 6736
  assert costs.compute_costs(arch, 8).model_size_bits == expected


def test_hand_derived_small_network():
  space = macro.space_for_string("conv3:s1:c8 maxpool:s2 dwsep3:s1:c16", (4, 4, 1), 10)
  arch = space.parse("conv3:s1:c8 maxpool:s2 dwsep3:s1:c16")
  c = costs.compute_costs(arch, weight_bits=4, activation_bits=8)
  # conv 3x3x1x8 + BN(8); dw 3x3x8 + BN(8), pw 8x16 + BN(16); dense 16x10 + 10.
  assert c.params == (72 + 16) + (72 + 16 + 128 + 32) + (160 + 10) == 506
  assert c.macs == 16 * 72 + 4 * 72 + 4 * 128 + 160 == 2112
  kernels, scales, others = 72 + 72 + 128 + 160, 8 + 8 + 16 + 10, 16 + 16 + 32 + 10
  assert c.model_size_bits == kernels * 4 + scales * 32 + others * 32 == 5440
  # Largest live set: the 2x2 pooling layer's input (4*4*8) and output (2*2*8).
  assert c.peak_activation_bytes == 128 + 32
  assert costs.compute_costs(arch, 32, 32).model_size_bits == 506 * 32
  assert costs.compute_costs(arch, 32, 32).peak_activation_bytes == 160 * 4


def test_residual_layers_hold_their_input_until_the_addition():
  text = "conv3:s1:c8 dwsep3:s1:c8:res"
  arch = macro.space_for_string(text, (4, 4, 1), 10).parse(text)
  # The dwsep layer's input (4*4*8 = 128) is added to its output, so it stays alive
  # while the depthwise intermediate (128) and the pointwise output (128) are written,
  # and while the addition writes its own output (128).
  assert costs.compute_costs(arch, activation_bits=8).peak_activation_bytes == 3 * 128
  conv_res = "conv3:s1:c8 conv3:s1:c8:res"
  arch = macro.space_for_string(conv_res, (4, 4, 1), 10).parse(conv_res)
  # Input, convolution output and their sum: three 128-element buffers.
  assert costs.compute_costs(arch, activation_bits=8).peak_activation_bytes == 3 * 128
  plain = macro.space_for_string(text, (4, 4, 1), 10).parse("conv3:s1:c8 dwsep3:s1:c8")
  assert costs.compute_costs(plain, activation_bits=8).peak_activation_bytes == 2 * 128


def test_the_exported_graphs_buffers_and_their_lifetimes():
  text = "conv3:s1:c8 dwsep3:s1:c8:res"
  arch = macro.space_for_string(text, (4, 4, 1), 10).parse(text)
  got = [(b.elements, b.first, b.last) for b in arena.macro_buffers(arch)]
  assert got == [
    (16, 0, 0),  # raw image, read by the normalization's multiply (op 0)
    (16, 0, 1),  # multiply, read by the add
    (16, 1, 2),  # normalized image, read by the convolution
    (128, 2, 5),  # convolution output: read by the depthwise (3) and the addition (5)
    (128, 3, 4),  # depthwise intermediate
    (128, 4, 5),  # pointwise output
    (128, 5, 6),  # residual sum, read by the global mean
    (8, 6, 7),  # pooled features
    (10, 7, 7),  # logits: the graph output
  ]


def test_the_greedy_planner_can_need_more_than_the_largest_live_set():
  b = arena.Buffer
  buffers = [b(48, 0, 0), b(32, 1, 2), b(32, 2, 3), b(16, 0, 1)]
  # At most 64 bytes are alive at once (ops 0 and 2). Largest first: the 48 at 0; of
  # the two 32s the later-created one first, at 0 (not alive with the 48); the other
  # is alive with it, so at 32; the 16 is alive with the 48 (0..48) and with the 32 at
  # 32..64, so it goes at 64: an 80-byte arena.
  assert arena.greedy_arena_bytes([x.elements for x in buffers], buffers) == 80
  # Sizes are aligned up to 16 bytes.
  assert arena.greedy_arena_bytes([1, 17], [b(1, 0, 0), b(17, 0, 1)]) == 16 + 32


def test_two_residual_layers_fragment_the_arena():
  text = "conv3:s1:c8 dwsep3:s1:c8:res dwsep3:s1:c8:res"
  arch = macro.space_for_string(text, (12, 12, 1), 10).parse(text)
  # Three 1,152-byte buffers are alive at once at most, but the planner needs four.
  assert arena.macro_live_peak_elements(arch) == 3 * 1152
  assert costs.compute_costs(arch, activation_bits=8).peak_activation_bytes == 4 * 1152


@pytest.mark.parametrize(
  "cell, params, mmacs",
  [
    # NAS-Bench-201's published CIFAR-10 costs: the largest and the smallest cell.
    (
      "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|"
      "nor_conv_3x3~2|",
      1_531_546,
      220.1197,
    ),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 73_306, 7.7830),
  ],
)
def test_nb201_published_costs(cell, params, mmacs):
  c = costs.compute_costs(NB201Space().parse(cell))
  assert c.params == params
  assert c.macs / 1e6 == pytest.approx(mmacs, abs=1e-3)


def test_nb201_peak_memory_hand_derived():
  c = NB201SpaceConfig(input_shape=(4, 4, 3), stem_channels=2, cells_per_stage=1)
  arch = NB201Space(c).parse(
    "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
  )
  # Stem: 48 + 32 = 80. First cell (32 elements a node): node 0 held while its 1x1
  # conv writes a temporary and node 1's buffer: 3 x 32 = 96, the peak; node 0 is then
  # freed, so nodes 2 and 3 need 2 x 32. Later stages are smaller.
  assert costs.compute_costs(arch, activation_bits=8).peak_activation_bytes == 96
  assert costs.compute_costs(arch, activation_bits=16).peak_activation_bytes == 192


def test_bad_bits():
  arch = macro.reference_architecture("fmnist_ref")
  with pytest.raises(ValueError, match=r"weight_bits must be .*\[2, 8\] or 32"):
    costs.compute_costs(arch, 1)
  with pytest.raises(ValueError, match="activation_bits"):
    costs.compute_costs(arch, 4, activation_bits=4)


def test_vectorized_macro_costs_equal_compute_costs():
  from nasq.costs import macro_costs_batch

  space = macro.MacroSpace()
  rng = np.random.default_rng(7)
  for distribution in ("uniform", "depth_uniform"):
    tokens, states, choices = space.sample_tokens(rng, 300, distribution, True)
    params, macs = macro_costs_batch(space, states, choices)
    for t, p, m in zip(tokens, params, macs, strict=True):
      c = costs.compute_costs(space.decode(t))
      assert (c.params, c.macs) == (p, m)
