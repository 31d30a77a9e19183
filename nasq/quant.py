"""Weight quantization: pure functions, a straight-through estimator, quantized layers.

Scheme: symmetric, uniform, per output channel. For ``b`` bits the integer codes are
``-(2^(b-1) - 1) .. 2^(b-1) - 1`` (``2^b - 1`` levels; the most negative code is unused so
that zero is exact and the grid is symmetric) and each output channel's scale is
``max|w| / (2^(b-1) - 1)``. ``b = 32`` means no quantization. What is quantized: the
kernels of every convolution and dense layer. What stays float32: BatchNorm scale and
bias, the classifier bias, and the per-channel scales themselves (see ``nasq.costs``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasq import ops

Array = jax.Array
FLOAT_BITS = 32
MIN_BITS, MAX_BITS = 2, 8


def check_bits(bits: int, field: str = "weight_bits") -> int:
  """Returns ``bits`` if it is a supported weight bit width, else raises naming ``field``."""
  if bits != FLOAT_BITS and not (MIN_BITS <= bits <= MAX_BITS):
    raise ValueError(
      f"{field} must be an integer in [{MIN_BITS}, {MAX_BITS}] or "
      f"{FLOAT_BITS} (no quantization), got {bits!r}"
    )
  return int(bits)


def _reduce_axes(ndim: int, channel_axis: int) -> tuple[int, ...]:
  return tuple(a for a in range(ndim) if a != channel_axis % ndim)


def quantize(w: Array, bits: int, channel_axis: int = -1) -> tuple[Array, Array]:
  """Symmetric per-channel quantization.

  Args:
    w: weights; ``channel_axis`` indexes the output channels.
    bits: bit width in [2, 8].
    channel_axis: the axis holding one scale each.

  Returns:
    ``(codes, scale)``: integer-valued float codes in ``[-qmax, qmax]`` and the scales,
    shaped to broadcast against ``w``; ``codes * scale`` is the quantized tensor.
  """
  check_bits(bits)
  qmax = 2 ** (bits - 1) - 1
  absmax = jnp.max(jnp.abs(w), axis=_reduce_axes(w.ndim, channel_axis), keepdims=True)
  # An all-zero channel gets scale 1 (its codes are 0 whatever the scale).
  scale = jnp.where(absmax > 0, absmax / qmax, jnp.ones_like(absmax))
  codes = jnp.clip(jnp.round(w / scale), -qmax, qmax)
  return codes, scale


def fake_quantize(w: Array, bits: int, channel_axis: int = -1) -> Array:
  """Quantize-dequantize with a straight-through gradient (identity in the backward)."""
  if check_bits(bits) == FLOAT_BITS:
    return w
  codes, scale = quantize(w, bits, channel_axis)
  return w + jax.lax.stop_gradient(codes * scale - w)


@dataclasses.dataclass(frozen=True)
class WeightQuantizer:
  """A weight quantizer to inject into ``QuantConv`` / ``QuantDense``."""

  bits: int = FLOAT_BITS
  channel_axis: int = -1

  def __post_init__(self):
    check_bits(self.bits)

  def __call__(self, w: Array) -> Array:
    return fake_quantize(w, self.bits, self.channel_axis)


he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class QuantConv(nn.Module):
  """NHWC convolution with SAME padding, no bias, and an injected weight quantizer."""

  features: int
  kernel_size: int
  strides: int = 1
  feature_group_count: int = 1
  quantizer: Callable[[Array], Array] = WeightQuantizer()
  kernel_init: Callable[..., Any] = he_normal

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_features = x.shape[-1]
    if in_features % self.feature_group_count:
      raise ValueError(
        f"input channels {in_features} not divisible by groups {self.feature_group_count}"
      )
    kernel = self.param(
      "kernel",
      self.kernel_init,
      (
        self.kernel_size,
        self.kernel_size,
        in_features // self.feature_group_count,
        self.features,
      ),
      jnp.float32,
    )
    kernel = self.quantizer(kernel).astype(x.dtype)
    # nasq.ops: depthwise and strided convolutions in forms XLA:CPU runs fast.
    if self.feature_group_count == in_features > 1:
      return ops.depthwise_conv(x, kernel, self.strides)
    if self.feature_group_count == 1:
      return ops.conv(x, kernel, self.strides)
    return jax.lax.conv_general_dilated(
      x,
      kernel,
      window_strides=(self.strides, self.strides),
      padding="SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=self.feature_group_count,
    )


class QuantDense(nn.Module):
  """Dense layer with bias and an injected weight quantizer (the bias stays float)."""

  features: int
  quantizer: Callable[[Array], Array] = WeightQuantizer()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features), jnp.float32
    )
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return x @ self.quantizer(kernel).astype(x.dtype) + bias


# --- activations (integer-faithful QAT) --------------------------------------------------

ACT_LEVELS = 256  # 8-bit activations


def nudge_range(lo: Array, hi: Array) -> tuple[Array, Array, Array]:
  """(min, max, scale) of an 8-bit range moved so that 0.0 is exactly a level: the
  rule TensorFlow's FakeQuant ops and its int8 converter apply (zero point rounded half
  up inside [0, 255])."""
  scale = (hi - lo) / (ACT_LEVELS - 1)
  safe = jnp.where(scale > 0, scale, 1.0)
  zero = jnp.floor(jnp.clip(-lo / safe, 0, ACT_LEVELS - 1) + 0.5)
  return -zero * scale, (ACT_LEVELS - 1 - zero) * scale, scale


def fake_quantize_activation(x: Array, lo: Array, hi: Array) -> Array:
  """8-bit per-tensor quantize-dequantize of ``x`` in the nudged ``[lo, hi]``, as
  ``tf.quantization.fake_quant_with_min_max_args`` computes it; the gradient passes
  inside the range and is zero outside. An empty range (before any statistics) passes
  ``x`` through."""
  nlo, nhi, scale = nudge_range(lo, hi)
  ok = scale > 0
  inv = 1.0 / jnp.where(ok, scale, 1.0)
  clipped = jnp.clip(x, nlo, nhi)
  q = jnp.floor((clipped - nlo) * inv + 0.5) * scale + nlo
  return jnp.where(ok, clipped + jax.lax.stop_gradient(q - clipped), x)


class ActivationQuantizer(nn.Module):
  """8-bit fake quantization of one activation tensor, per tensor, at a point the int8
  export quantizes. The range is an exponential moving average of the training
  batches' min and max (each widened to hold 0), started at the first batch; stored
  in ``batch_stats`` (``min``, ``max``), so checkpoints carry it to the export."""

  momentum: float = 0.99

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    lo = self.variable("batch_stats", "min", jnp.zeros, (), jnp.float32)
    hi = self.variable("batch_stats", "max", jnp.zeros, (), jnp.float32)
    if train and not self.is_initializing():
      batch_lo = jnp.minimum(jax.lax.stop_gradient(jnp.min(x)), 0.0)
      batch_hi = jnp.maximum(jax.lax.stop_gradient(jnp.max(x)), 0.0)
      m = jnp.where(hi.value > lo.value, self.momentum, 0.0)  # first batch: take it
      lo.value = m * lo.value + (1 - m) * batch_lo
      hi.value = m * hi.value + (1 - m) * batch_hi
    return fake_quantize_activation(x, lo.value, hi.value)


@dataclasses.dataclass(frozen=True)
class IntegerWeights:
  """A deployable quantized kernel: ``codes * scale`` (scale per output channel)."""

  codes: np.ndarray  # int8, same shape as the kernel
  scale: np.ndarray  # float32, one per output channel
  bits: int


def extract_integer_weights(
  params: Any, bits_by_module: dict[str, int]
) -> dict[str, IntegerWeights]:
  """Integer codes and scales of every quantized kernel, keyed by module path.

  Args:
    params: the model's ``params`` collection.
    bits_by_module: weight bit width of each kernel-carrying module, by '/'-separated
      path (``nasq.costs.kernel_modules_bits``); modules at 32 bits are skipped.
  """
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  out = {}
  for name, bits in bits_by_module.items():
    if bits == FLOAT_BITS:
      continue
    kernel = flat[f"{name}/kernel"]
    codes, scale = quantize(jnp.asarray(kernel), bits)
    out[name] = IntegerWeights(
      np.asarray(codes, dtype=np.int8),
      np.asarray(scale, dtype=np.float32).reshape(-1),
      bits,
    )
  return out


def distinct_values_per_channel(w: np.ndarray, channel_axis: int = -1) -> Sequence[int]:
  """Number of distinct values in each output channel (a test helper for reports)."""
  w = np.moveaxis(np.asarray(w), channel_axis, -1).reshape(-1, np.shape(w)[channel_axis])
  return [len(np.unique(w[:, c])) for c in range(w.shape[1])]


@dataclasses.dataclass(frozen=True)
class QuantConfig:
  """How a candidate is quantized: weights in training, activations in the memory cost.

  Attributes:
    weight_bits: model-wide weight bit width (2..8, or 32 for float); layers of a
      mixed-precision architecture override it with their own.
    activation_bits: bits per activation element of the deployed runtime (8, 16 or 32);
      used by ``nasq.costs`` for peak activation memory.
    integer_qat: train what the int8 export computes (macro networks): every
      activation the int8 model quantizes is fake-quantized to 8 bits with a learned
      (moving-average) range, which the export then uses. BatchNorm needs no folding
      in training: with symmetric per-output-channel weight quantization, quantizing a
      kernel and then scaling each output channel by BatchNorm's factor is the same as
      quantizing the folded kernel (each channel's scale absorbs the factor), so the
      export's folded kernels are exactly the trained ones. False: weights only.
  """

  weight_bits: int = FLOAT_BITS
  activation_bits: int = 8
  integer_qat: bool = False

  def __post_init__(self):
    check_bits(self.weight_bits, "quant.weight_bits")
    if self.activation_bits not in (8, 16, 32):
      raise ValueError(
        f"quant.activation_bits must be one of (8, 16, 32), got {self.activation_bits!r}"
      )
    if self.integer_qat and self.activation_bits != 8:
      raise ValueError(
        f"integer_qat trains 8-bit activations: activation_bits must be 8, got "
        f"{self.activation_bits}"
      )
