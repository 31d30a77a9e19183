"""Exact hardware costs of an architecture, computed from the architecture alone.

Definitions (batch size 1 for everything below):

* **params**: every trainable parameter of the built Flax model: convolution and dense
  kernels, BatchNorm scale and bias (2 per channel), the classifier bias. BatchNorm
  running statistics are not parameters (a deployed model folds them into the scale and
  bias).
* **macs**: multiply-accumulates of convolutions and dense layers
  (``H_out * W_out * k * k * C_in / groups * C_out``; ``C_in * C_out`` for dense).
  BatchNorm (foldable), activations, pooling and additions count 0.
* **model_size_bits**: what the stored model takes at a weight bit width ``b``: every
  conv/dense kernel at ``b`` bits (a layer of a mixed-precision architecture at its own
  width) plus, for each quantized kernel, one float32 scale per output channel; all
  other parameters (BatchNorm scale/bias, classifier bias) at 32 bits.
* **peak_activation_bytes**: the activation arena a microcontroller runtime needs for one
  inference, at ``activation_bits`` per element. Macro networks: every activation tensor
  of the layer-by-layer graph the exporter writes (``nasq/export.py``: the raw input and
  its in-graph normalization, each convolution, depthwise intermediate, pooling and
  residual addition output, the pooled features, the logits), each alive from the
  operator that writes it to the last one that reads it, laid out by LiteRT Micro's
  greedy memory planner (largest buffer first, each at the lowest offset that no
  buffer alive at the same time occupies, every buffer 16-byte aligned). This equals the
  runtime's measured activation arena (``nasq/arena.py``; experiments/benchmarks/peak_memory.py), and is
  at least the most bytes alive at once, which is what an optimal planner would need
  (``nasq.arena.macro_live_peak_elements``). NAS-Bench-201 cells (not exportable): the most bytes
  alive at once, one buffer per cell node freed after its last use.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np

from nasq.arena import Shape, macro_arena_bytes
from nasq.arena import downsample as _down
from nasq.quant import FLOAT_BITS, check_bits
from nasq.spaces.macro import MacroArchitecture, MacroSpace
from nasq.spaces.nb201 import NB201Architecture


@dataclasses.dataclass(frozen=True)
class LayerCost:
  """Costs of one layer (or block) of a network; one row of a report's breakdown."""

  name: str
  op: str
  input_shape: Shape
  output_shape: Shape
  params: int
  kernel_params: int  # the quantized part of ``params``
  quant_channels: int  # number of per-output-channel scales of its kernels
  macs: int
  weight_bits: int  # bit width of its kernels (32 when it has none)
  kernel_modules: tuple[str, ...] = ()  # model modules holding its kernels

  @property
  def model_size_bits(self) -> int:
    size = self.kernel_params * self.weight_bits + (self.params - self.kernel_params) * 32
    if self.kernel_params and self.weight_bits < FLOAT_BITS:
      size += self.quant_channels * 32
    return size


@dataclasses.dataclass(frozen=True)
class Costs:
  """Whole-network costs and the per-layer breakdown."""

  params: int
  macs: int
  model_size_bits: int
  peak_activation_bytes: int
  weight_bits: int
  activation_bits: int
  layers: tuple[LayerCost, ...]

  def summary(self) -> dict[str, int]:
    return {
      "params": self.params,
      "macs": self.macs,
      "model_size_bits": self.model_size_bits,
      "peak_activation_bytes": self.peak_activation_bytes,
    }


def _conv(
  name: str,
  op: str,
  inp: Shape,
  out_channels: int,
  k: int,
  stride: int,
  bits: int,
  groups: int = 1,
  bn: bool = True,
  module: str | None = None,
) -> LayerCost:
  out = _down(inp, stride, out_channels)
  kernel = k * k * (inp[2] // groups) * out_channels
  return LayerCost(
    name,
    op,
    inp,
    out,
    kernel + (2 * out_channels if bn else 0),
    kernel,
    out_channels,
    out[0] * out[1] * kernel,
    bits,
    (module or name,),
  )


def _merge(name: str, op: str, parts: Sequence[LayerCost]) -> LayerCost:
  return LayerCost(
    name,
    op,
    parts[0].input_shape,
    parts[-1].output_shape,
    sum(p.params for p in parts),
    sum(p.kernel_params for p in parts),
    sum(p.quant_channels for p in parts),
    sum(p.macs for p in parts),
    parts[0].weight_bits,
    sum((p.kernel_modules for p in parts), ()),
  )


def _free(name: str, op: str, inp: Shape, out: Shape, params: int = 0) -> LayerCost:
  return LayerCost(name, op, inp, out, params, 0, 0, 0, FLOAT_BITS)


def classifier_cost(features: int, num_classes: int, bits: int) -> LayerCost:
  kernel = features * num_classes
  return LayerCost(
    "classifier",
    "dense",
    (1, 1, features),
    (1, 1, num_classes),
    kernel + num_classes,
    kernel,
    num_classes,
    kernel,
    bits,
    ("classifier",),
  )


# --- macro space ------------------------------------------------------------------------


def macro_units(arch: MacroArchitecture, weight_bits: int) -> list[LayerCost]:
  units = []
  shapes = arch.shapes()
  for i, layer in enumerate(arch.layers):
    inp = shapes[i]
    bits = layer.weight_bits if layer.weight_bits is not None else weight_bits
    name = f"layer{i}"
    if layer.kind == "conv":
      u = _conv(
        name,
        layer.op,
        inp,
        layer.channels,
        layer.kernel_size,
        layer.stride,
        bits,
        module=f"{name}_conv",
      )
    elif layer.kind == "dwsep":
      dw = _conv(
        name,
        "dw",
        inp,
        inp[2],
        layer.kernel_size,
        layer.stride,
        bits,
        groups=inp[2],
        module=f"{name}_dw",
      )
      pw = _conv(
        name, "pw", dw.output_shape, layer.channels, 1, 1, bits, module=f"{name}_pw"
      )
      u = _merge(name, layer.op, [dw, pw])
    else:
      u = _free(name, layer.op, inp, shapes[i + 1])
    units.append(u)
  units.append(classifier_cost(shapes[-1][2], arch.num_classes, weight_bits))
  return units


def macro_option_costs(space: MacroSpace) -> tuple[np.ndarray, np.ndarray]:
  """Per automaton (state, option): the params and MACs that choosing it adds.

  A layer's params and MACs depend only on its input shape (the state) and its own
  choices, so whole-network totals are sums along the automaton path; the classifier is
  charged to the option that closes the network (the end token, or the last layer of a
  full-depth network). Float64 arrays [S, O].
  """
  return _macro_option_costs(space)


@functools.cache
def _macro_option_costs(space: MacroSpace) -> tuple[np.ndarray, np.ndarray]:
  a = space.automaton
  params = np.zeros(a.option_valid.shape)
  macs = np.zeros(a.option_valid.shape)
  last = space.num_positions // space.fields_per_layer - 1
  for s, key in enumerate(a.state_keys):
    if key is None:  # ended: padding only
      continue
    h, w, c = key
    for o in np.flatnonzero(a.option_valid[s]):
      t = a.options[s, o]
      if t[0] == 0:
        u = classifier_cost(c, space.num_classes, FLOAT_BITS)
        params[s, o], macs[s, o] = u.params, u.macs
        continue
      arch = space.decode_layer(t, (h, w, c))
      units = macro_units(arch, FLOAT_BITS)
      layer = units[0]
      params[s, o], macs[s, o] = layer.params, layer.macs
      if a.state_block[s] == last:
        params[s, o] += units[-1].params
        macs[s, o] += units[-1].macs
  return params, macs


def macro_costs_batch(
  space: MacroSpace, states: np.ndarray, choices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Params and MACs [n] of many architectures given their automaton paths [n, B]."""
  params, macs = macro_option_costs(space)
  return params[states, choices].sum(axis=1), macs[states, choices].sum(axis=1)


# --- NAS-Bench-201 ----------------------------------------------------------------------


def nb201_units(
  arch: NB201Architecture, weight_bits: int = FLOAT_BITS
) -> list[LayerCost]:
  """The skeleton's costed pieces, named as in ``nasq.models.NB201Network``."""
  c = arch.stem_channels
  shape = (arch.input_shape[0], arch.input_shape[1], arch.input_shape[2])
  units = [_conv("stem", "conv3", shape, c, 3, 1, weight_bits, module="stem_conv")]
  shape = units[0].output_shape  # the stem's params include stem_bn's scale and bias
  for stage in range(3):
    if stage:
      c *= 2
      a = _conv(
        f"res{stage}_a", "conv3", shape, c, 3, 2, weight_bits, module=f"res{stage}_a/conv"
      )
      b = _conv(
        f"res{stage}_b",
        "conv3",
        a.output_shape,
        c,
        3,
        1,
        weight_bits,
        module=f"res{stage}_b/conv",
      )
      down = _conv(
        f"res{stage}_down",
        "conv1",
        _down(shape, 2, shape[2]),
        c,
        1,
        1,
        weight_bits,
        bn=False,
      )
      units.append(_merge(f"res{stage}", "resblock", [a, b, down]))
      shape = a.output_shape
    for cell in range(arch.cells_per_stage):
      for e, (_, _, op) in enumerate(arch.edges()):
        name = f"cell{stage}_{cell}_e{e}"
        if op in ("nor_conv_1x1", "nor_conv_3x3"):
          k = 1 if op == "nor_conv_1x1" else 3
          units.append(
            _conv(name, op, shape, c, k, 1, weight_bits, module=f"{name}/conv")
          )
        else:
          units.append(_free(name, op, shape, shape))
  units.append(_free("last_bn", "bn", shape, shape, params=2 * c))
  units.append(classifier_cost(c, arch.num_classes, weight_bits))
  return units


def nb201_peak_elements(arch: NB201Architecture) -> int:
  """Peak live elements: one buffer per cell node, freed after its last use; a
  convolution or pooling edge also holds its output before adding it to its node."""
  h, w, c = arch.input_shape
  s = arch.stem_channels
  peak = h * w * c + h * w * s  # stem
  size = h * w * s
  last_use = {
    i: max((j for (src, j, op) in arch.edges() if src == i and op != "none"), default=0)
    for i in range(4)
  }
  # Nodes fed by a convolution or pooling edge also hold that edge's output.
  has_temp = {
    j: any(d == j and op not in ("none", "skip_connect") for _, d, op in arch.edges())
    for j in range(1, 4)
  }
  for stage in range(3):
    if stage:
      h, w = -(-h // 2), -(-w // 2)
      s *= 2
      out = h * w * s
      pooled = h * w * (s // 2)
      # conv_b (input still held for the shortcut), then pooling, then the shortcut.
      peak = max(peak, size + out + out, out + size + pooled, out + pooled + out)
      size = out
    for _ in range(arch.cells_per_stage):
      live_nodes = {0: size}
      for j in range(1, 4):
        held = sum(live_nodes.values()) + size  # live nodes and node j's accumulator
        peak = max(peak, held + (size if has_temp[j] else 0))
        live_nodes[j] = size
        for i in list(live_nodes):
          if i < j and last_use[i] <= j:
            del live_nodes[i]
  return max(peak, size + s, s + arch.num_classes)


# --- entry point ------------------------------------------------------------------------


def compute_costs(
  arch: MacroArchitecture | NB201Architecture,
  weight_bits: int = FLOAT_BITS,
  activation_bits: int = 8,
) -> Costs:
  """All costs of ``arch`` with ``weight_bits``-bit weights (mixed-precision layers of
  the macro space use their own widths) and ``activation_bits``-bit activations."""
  check_bits(weight_bits)
  if activation_bits not in (8, 16, 32):
    raise ValueError(
      f"activation_bits must be one of (8, 16, 32), got {activation_bits!r}"
    )
  if isinstance(arch, MacroArchitecture):
    units = macro_units(arch, weight_bits)
    peak_bytes = macro_arena_bytes(arch, activation_bits)
  elif isinstance(arch, NB201Architecture):
    units = nb201_units(arch, weight_bits)
    peak_bytes = math.ceil(nb201_peak_elements(arch) * activation_bits / 8)
  else:
    raise TypeError(f"no cost model for architecture type {type(arch).__name__}")
  return Costs(
    params=sum(u.params for u in units),
    macs=sum(u.macs for u in units),
    model_size_bits=sum(u.model_size_bits for u in units),
    peak_activation_bytes=peak_bytes,
    weight_bits=weight_bits,
    activation_bits=activation_bits,
    layers=tuple(units),
  )


def kernel_modules_bits(
  arch: MacroArchitecture | NB201Architecture, weight_bits: int
) -> dict[str, int]:
  """Weight bit width of every kernel-carrying model module (by module path)."""
  return {
    m: u.weight_bits
    for u in compute_costs(arch, weight_bits).layers
    for m in u.kernel_modules
  }


# --- budgets ----------------------------------------------------------------------------

BUDGET_FIELDS = ("model_size_bits", "macs", "peak_activation_bytes", "params")


@dataclasses.dataclass(frozen=True)
class Budget:
  """Upper bounds on costs (the ``budget`` section); ``None`` means unconstrained."""

  model_size_bits: float | None = None  # Stored weights, in bits.
  macs: float | None = None  # Multiply-accumulates per image.
  peak_activation_bytes: float | None = None  # Peak activation memory, in bytes.
  params: float | None = None  # Parameter count.

  def __post_init__(self):
    for field in BUDGET_FIELDS:
      v = getattr(self, field)
      if v is not None and not float(v) > 0:
        raise ValueError(f"budget.{field} must be > 0 or None, got {v}")
      object.__setattr__(self, field, None if v is None else float(v))

  def violations(self, costs: dict[str, float]) -> list[str]:
    """One line per exceeded bound, e.g. ``"macs 3100000 > 3000000"``."""
    out = []
    for field in BUDGET_FIELDS:
      limit = getattr(self, field)
      if limit is not None and costs[field] > limit:
        out.append(f"{field} {costs[field]:.0f} > {limit:.0f}")
    return out

  def fits(self, costs: dict[str, float]) -> bool:
    return not self.violations(costs)
