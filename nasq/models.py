"""Flax CNNs built from an architecture of any space and a weight bit width.

Building blocks are injected (``conv``, ``dense``, ``norm``), so the quantized and the
float networks are the same code. Module names follow ``nasq.costs``' per-layer names
(``layer3_dw``, ``cell2_1_e0``...), so costs, parameters and integer weights line up.

Two CPU-speed choices (measured, see experiments/benchmarks/train_throughput.py):
BatchNorm computes its batch statistics as matrix-vector products with a ones vector
(XLA:CPU turns plain reductions of this shape into slow reduce-window loops), and 2x2
pooling at stride 2 is a reshape + reduction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nasq import ops
from nasq.quant import (
  FLOAT_BITS,
  ActivationQuantizer,
  QuantConv,
  QuantDense,
  WeightQuantizer,
  check_bits,
)
from nasq.spaces.macro import WEIGHTED_KINDS, MacroArchitecture
from nasq.spaces.nb201 import NB201Architecture

Array = jax.Array
ModuleDef = Any

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
  "relu": nn.relu,
  "relu6": nn.relu6,
  "silu": nn.silu,
}


class BatchNorm(nn.Module):
  """BatchNorm over NHWC channels; same parameters and semantics as ``nn.BatchNorm``.

  Batch statistics are ``ones @ x`` and ``ones @ x**2`` (dot products), which XLA:CPU
  runs far faster than the equivalent reductions.
  """

  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      flat = x.reshape(-1, c)
      ones = jnp.ones((flat.shape[0],), x.dtype) / flat.shape[0]
      mean = ones @ flat
      centered = flat - mean  # two passes: E[x^2] - E[x]^2 loses float32 precision
      var = ones @ (centered * centered)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    return x * mul + (bias - mean * mul)


def pool(x: Array, kind: str, window: int, stride: int) -> Array:
  """Max or average pooling with SAME padding (padding excluded from averages)."""
  n, h, w, c = x.shape
  if window == stride == 2 and h % 2 == 0 and w % 2 == 0:
    blocks = x.reshape(n, h // 2, 2, w // 2, 2, c)
    return blocks.max(axis=(2, 4)) if kind == "max" else blocks.mean(axis=(2, 4))
  if kind == "max" and stride == 1:
    return ops.max_pool_stride1(x, window)
  dims, strides = (1, window, window, 1), (1, stride, stride, 1)
  if kind == "max":
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, "SAME")
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, "SAME")
  count = jax.lax.reduce_window(
    jnp.ones((1, h, w, 1), x.dtype), 0.0, jax.lax.add, dims, strides, "SAME"
  )
  return total / count


def global_avg_pool(x: Array) -> Array:
  return jnp.mean(x, axis=(1, 2))


class MacroCNN(nn.Module):
  """A sequential CNN of the macro space."""

  arch: MacroArchitecture
  weight_bits: int = FLOAT_BITS
  conv: ModuleDef = QuantConv
  dense: ModuleDef = QuantDense
  norm: ModuleDef = BatchNorm
  float_weights: bool = False  # True: no layer quantized, whatever its own width
  # Integer-faithful QAT (QuantConfig.integer_qat): 8-bit activations wherever the int8
  # export quantizes (ActivationQuantizer modules named *_aq).
  integer_qat: bool = False

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    act = ACTIVATIONS[self.arch.activation]
    norm = functools.partial(self.norm, use_running_average=not train)

    def aq(x: Array, name: str) -> Array:
      return ActivationQuantizer(name=name)(x, train) if self.integer_qat else x

    def conv_bn(x, features, size, stride, groups, quantizer, name, bn):
      y = self.conv(features, size, stride, groups, quantizer=quantizer, name=name)(x)
      return norm(name=bn)(y)

    x = aq(x, "input_aq")
    for i, layer in enumerate(self.arch.layers):
      bits = layer.weight_bits if layer.weight_bits is not None else self.weight_bits
      bits = FLOAT_BITS if self.float_weights else bits
      quantizer = WeightQuantizer(bits)
      inputs = x
      if layer.kind == "conv":
        x = conv_bn(
          x,
          layer.channels,
          layer.kernel_size,
          layer.stride,
          1,
          quantizer,
          f"layer{i}_conv",
          f"layer{i}_bn",
        )
        x = aq(act(x), f"layer{i}_aq")
      elif layer.kind == "dwsep":
        c = x.shape[-1]
        x = conv_bn(
          x,
          c,
          layer.kernel_size,
          layer.stride,
          c,
          quantizer,
          f"layer{i}_dw",
          f"layer{i}_dw_bn",
        )
        x = aq(act(x), f"layer{i}_dw_aq")
        x = conv_bn(
          x, layer.channels, 1, 1, 1, quantizer, f"layer{i}_pw", f"layer{i}_pw_bn"
        )
        x = aq(act(x), f"layer{i}_pw_aq")
      else:  # int8 pooling keeps its input's quantization: no range of its own
        x = pool(x, layer.kind[:3], layer.kernel_size, layer.stride)
      if layer.residual:
        assert layer.kind in WEIGHTED_KINDS and x.shape == inputs.shape
        x = aq(x + inputs, f"layer{i}_res_aq")
    x = aq(global_avg_pool(x), "features_aq")
    x = self.dense(
      self.arch.num_classes,
      quantizer=WeightQuantizer(FLOAT_BITS if self.float_weights else self.weight_bits),
      name="classifier",
    )(x)
    return aq(x, "logits_aq")


class ReLUConvBN(nn.Module):
  """NAS-Bench-201's ReLU -> Conv (no bias) -> BatchNorm."""

  features: int
  kernel_size: int
  strides: int
  quantizer: Callable[[Array], Array]
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = self.conv(
      self.features, self.kernel_size, self.strides, quantizer=self.quantizer, name="conv"
    )(nn.relu(x))
    return self.norm(name="bn")(x)


class NB201Network(nn.Module):
  """The NAS-Bench-201 skeleton around one cell."""

  arch: NB201Architecture
  weight_bits: int = FLOAT_BITS
  conv: ModuleDef = QuantConv
  dense: ModuleDef = QuantDense
  norm: ModuleDef = BatchNorm

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    q = WeightQuantizer(self.weight_bits)
    norm = functools.partial(self.norm, use_running_average=not train)
    rcb = functools.partial(ReLUConvBN, quantizer=q, conv=self.conv, norm=norm)
    c = self.arch.stem_channels
    x = norm(name="stem_bn")(self.conv(c, 3, quantizer=q, name="stem_conv")(x))
    for stage in range(3):
      if stage:
        c *= 2
        shortcut = self.conv(c, 1, quantizer=q, name=f"res{stage}_down")(
          pool(x, "avg", 2, 2)
        )
        y = rcb(c, 3, 2, name=f"res{stage}_a")(x)
        x = rcb(c, 3, 1, name=f"res{stage}_b")(y) + shortcut
      for cell in range(self.arch.cells_per_stage):
        nodes = [x]
        for j in range(1, 4):
          total = jnp.zeros_like(x)
          for e, (i, dst, op) in enumerate(self.arch.edges()):
            if dst != j or op == "none":
              continue
            name = f"cell{stage}_{cell}_e{e}"
            if op == "skip_connect":
              total = total + nodes[i]
            elif op == "avg_pool_3x3":
              total = total + pool(nodes[i], "avg", 3, 1)
            else:
              k = 1 if op == "nor_conv_1x1" else 3
              total = total + rcb(c, k, 1, name=name)(nodes[i])
          nodes.append(total)
        x = nodes[3]
    x = nn.relu(norm(name="last_bn")(x))
    return self.dense(self.arch.num_classes, quantizer=q, name="classifier")(
      global_avg_pool(x)
    )


def build_model(
  arch: MacroArchitecture | NB201Architecture,
  weight_bits: int = FLOAT_BITS,
  float_weights: bool = False,
  integer_qat: bool = False,
) -> nn.Module:
  """The Flax model of ``arch`` with ``weight_bits``-bit weights (32: float); with
  ``float_weights``, every kernel float (a mixed-precision network's too), with the
  same variables; with ``integer_qat`` (macro networks), integer-faithful QAT."""
  check_bits(weight_bits)
  if isinstance(arch, MacroArchitecture):
    return MacroCNN(
      arch, weight_bits, float_weights=float_weights, integer_qat=integer_qat
    )
  if integer_qat:
    raise ValueError(
      f"integer_qat supports macro networks (the exportable ones), not "
      f"{type(arch).__name__}"
    )
  if isinstance(arch, NB201Architecture):
    return NB201Network(arch, FLOAT_BITS if float_weights else weight_bits)
  raise TypeError(f"no model for architecture type {type(arch).__name__}")


def init_variables(model: nn.Module, input_shape: tuple[int, ...], key: jax.Array):
  """Initial ``{'params', 'batch_stats'}`` for one NHWC input of ``input_shape``.

  One compiled program, its random numbers drawn with JAX's sequential threefry (not the
  partitionable one, JAX's default): XLA:CPU compiles the partitionable generator slowly
  for a network's dozens of parameter shapes, and the variables, created on one device,
  never need it. ``train.create_state`` takes 2.8x less time with it on networks of the
  default space (experiments/benchmarks/init_compile.py; figures in
  experiments/benchmarks/README.md).
  Op by op instead, the first network took about 40 s (one program per operation).
  """

  def init(k):
    return model.init(k, jnp.zeros((1, *input_shape), jnp.float32), train=False)

  with jax.threefry_partitionable(False):
    return jax.jit(init)(key)
