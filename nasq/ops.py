"""Convolution and pooling that XLA:CPU runs fast, with the gradients of their ``lax``
forms (tests/test_ops.py holds them together).

XLA:CPU lowers some layers of the macro space to generic kernels that are many times
slower per multiply-accumulate than a plain stride-1 convolution
(experiments/benchmarks/layer_throughput.py has the figures):

* Depthwise convolution (a grouped convolution with one channel per group): 10-50x
  slower, forward and backward. ``depthwise_conv`` writes it as a sum over the ``k x k``
  taps of shifted inputs times per-channel weights: the forward pass and the input
  gradient are single fused elementwise loops. The kernel gradient is one reduction
  per tap; over the whole batch at once each reduction streams both operands from
  memory, so it runs over slices of the batch small enough to stay in the cache (a
  ``lax.scan``), which is what makes it fast.
* Strided convolution: the backward pass of a stride-2 convolution is as slow as the
  stride-1 one with 4x the work. ``conv`` keeps XLA's forward and computes the
  gradients of the same convolution written on the space-to-depth input (a stride-1
  convolution over 4x the channels with a ``ceil((k+1)/2)``-wide kernel) where that
  measured faster (``uses_space_to_depth``); 1x1 kernels at stride 2 are a subsampling
  and a 1x1 convolution.
* Max pooling at stride 1 (3x3 window): ``reduce_window``'s gradient
  (select-and-scatter) runs 10-20x slower than the shifted-maximum form used here,
  which routes each gradient to the first maximum of its window, as XLA does.

Layouts: NHWC inputs, HWIO kernels (for depthwise, I = 1: Flax's and TFLite's layout);
SAME padding, TensorFlow's convention, everywhere.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array

# Bytes of one input slice in the kernel gradient's batch loop: small enough for the
# per-core cache, large enough that the loop's overhead does not show.
CACHE_SLICE_BYTES = 512 * 1024


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int, int]:
  """(pad before, pad after, output size) of TensorFlow's SAME padding on one axis."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel_size - size, 0)
  return total // 2, total - total // 2, out


def _tap(xp: Array, i: int, j: int, stride: int, out_h: int, out_w: int) -> Array:
  """The input window that tap (i, j) multiplies: xp[:, i::stride, j::stride, :]."""
  n, _, _, c = xp.shape
  return jax.lax.slice(
    xp,
    (0, i, j, 0),
    (n, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, c),
    (1, stride, stride, 1),
  )


def _sum_of_taps(xp: Array, w: Array, stride: int, out_h: int, out_w: int) -> Array:
  """sum_{i,j} xp[:, i + stride*y, j + stride*x, :] * w[i, j, :] (w: [k, k, C])."""
  k = w.shape[0]
  out = None
  for i in range(k):
    for j in range(k):
      term = _tap(xp, i, j, stride, out_h, out_w) * w[i, j]
      out = term if out is None else out + term
  return out


def _pad(x: Array, kernel_size: int, stride: int) -> tuple[Array, int, int]:
  _, h, w, _ = x.shape
  top, bottom, out_h = same_padding(h, kernel_size, stride)
  left, right, out_w = same_padding(w, kernel_size, stride)
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  return xp, out_h, out_w


def _batch_slice(n: int, example_bytes: int) -> int:
  """The largest divisor of ``n`` whose slice of the batch fits CACHE_SLICE_BYTES."""
  target = max(1, CACHE_SLICE_BYTES // max(example_bytes, 1))
  return max(d for d in range(1, min(n, target) + 1) if n % d == 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv(x: Array, kernel: Array, stride: int) -> Array:
  """Depthwise convolution of NHWC ``x`` with an HWIO ``kernel`` of shape [k, k, 1, C],
  SAME padding, ``stride`` on both spatial axes."""
  k = kernel.shape[0]
  xp, out_h, out_w = _pad(x, k, stride)
  return _sum_of_taps(xp, kernel.reshape(k, k, -1).astype(x.dtype), stride, out_h, out_w)


def _forward(x, kernel, stride):
  return depthwise_conv(x, kernel, stride), (x, kernel)


def _backward(stride, residuals, g):
  x, kernel = residuals
  n, h, w, c = x.shape
  k = kernel.shape[0]
  taps = kernel.reshape(k, k, c).astype(x.dtype)
  top, _, out_h = same_padding(h, k, stride)
  left, _, out_w = same_padding(w, k, stride)
  # Input gradient: a stride-1 correlation of the output gradient, dilated by the
  # stride and padded so that x[y] collects g[o] * w[y + top - stride*o], with the
  # kernel flipped.
  low_h, low_w = k - 1 - top, k - 1 - left
  high_h = h + k - 1 - low_h - ((out_h - 1) * stride + 1)
  high_w = w + k - 1 - low_w - ((out_w - 1) * stride + 1)
  gp = jax.lax.pad(
    g,
    jnp.zeros((), g.dtype),
    ((0, 0, 0), (low_h, high_h, stride - 1), (low_w, high_w, stride - 1), (0, 0, 0)),
  )
  dx = _sum_of_taps(gp, taps[::-1, ::-1], 1, h, w)

  # Kernel gradient: dw[i, j, c] = sum over examples and positions of the tap's input
  # window times g, reduced as ones-vector products (XLA:CPU's fast path for column
  # sums), one slice of the batch at a time, the taps in a loop (unrolled, the
  # program compiled 3x slower and ran no faster).
  xp, _, _ = _pad(x, k, stride)
  b = _batch_slice(n, xp[0].size * xp.dtype.itemsize)
  xs = xp.reshape(n // b, b, *xp.shape[1:])
  gs = g.reshape(n // b, b, *g.shape[1:])
  ones = jnp.ones((b * out_h * out_w,), g.dtype)
  span = ((out_h - 1) * stride + 1, (out_w - 1) * stride + 1)

  def accumulate(total, slices):
    xb, gb = slices
    gf = gb.reshape(-1, c)

    def add_tap(t, total):
      window = jax.lax.dynamic_slice(xb, (0, t // k, t % k, 0), (b, *span, c))
      window = window[:, ::stride, ::stride].reshape(-1, c)
      return total.at[t].add(ones @ (window * gf))

    return jax.lax.fori_loop(0, k * k, add_tap, total), None

  dw, _ = jax.lax.scan(accumulate, jnp.zeros((k * k, c), g.dtype), (xs, gs))
  return dx, dw.reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv.defvjp(_forward, _backward)


# --- convolution -------------------------------------------------------------------------


def _lax_conv(x: Array, kernel: Array, stride: int, padding="SAME") -> Array:
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    window_strides=(stride, stride),
    padding=padding,
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )


def _space_to_depth_conv(x: Array, kernel: Array) -> Array:
  """The stride-2 SAME convolution of ``x`` with ``kernel``, as a stride-1 VALID
  convolution of x's 2x2 phases stacked on the channel axis.

  Output o reads input 2*o + i - pad for tap i; with q = i - pad that is phase q mod 2
  at offset o + floor(q / 2), so the new kernel has one tap per offset in
  [floor(-pad / 2), floor((k - 1 - pad) / 2)] and zeros where no tap lands.
  """
  n, h, w, c = x.shape
  k, o = kernel.shape[0], kernel.shape[-1]
  top, _, out_h = same_padding(h, k, 2)
  left, _, out_w = same_padding(w, k, 2)
  if top != left:  # square kernels on a non-square image: SAME pads can differ
    return _lax_conv(x, kernel, 2)
  first, last = (-top) // 2, (k - 1 - top) // 2
  taps = last - first + 1
  rows, cols = 2 * (out_h + taps - 1), 2 * (out_w + taps - 1)
  xp = jnp.pad(
    x,
    (
      (0, 0),
      (-2 * first, rows - h + 2 * first),
      (-2 * first, cols - w + 2 * first),
      (0, 0),
    ),
  )
  phases = xp.reshape(n, rows // 2, 2, cols // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  phases = phases.reshape(n, rows // 2, cols // 2, 4 * c)
  low = 2 * first + top  # kernel tap of the first offset's phase 0 (may be < 0)
  kp = jnp.pad(
    kernel, ((-low, 2 * taps + low - k), (-low, 2 * taps + low - k), (0, 0), (0, 0))
  )
  k2 = kp.reshape(taps, 2, taps, 2, c, o).transpose(0, 2, 1, 3, 4, 5)
  return _lax_conv(phases, k2.reshape(taps, taps, 4 * c, o), 1, "VALID")


@jax.custom_vjp
def _strided_conv(x: Array, kernel: Array) -> Array:
  return _lax_conv(x, kernel, 2)


def _strided_conv_forward(x, kernel):
  return _lax_conv(x, kernel, 2), (x, kernel)


def _strided_conv_backward(residuals, g):
  return jax.vjp(_space_to_depth_conv, *residuals)[1](g)


_strided_conv.defvjp(_strided_conv_forward, _strided_conv_backward)


# Stride-2 convolutions whose gradients go through space-to-depth: 5x5 and 7x7 kernels,
# and 3x3 ones on at most this many input channels. The rewrite does (k+1)^2/k^2 of the
# work (1.8x at 3x3, 1.3x at 7x7). experiments/benchmarks/strided_conv.py (the two
# gradients interleaved in one process, batch 128, 2 cores, 2026-12-06, two runs): it is
# 1.24-3.1x faster than XLA's strided gradient at 5x5 and 7x7 (16-64 channels, 14x14
# and 28x28); at 3x3 the two are within the machine's noise (0.87-1.25x across widths
# and runs) except at 64 channels on 14x14, where XLA's is faster (0.63x and 0.78x).
SPACE_TO_DEPTH_3X3_MAX_CHANNELS = 16


def uses_space_to_depth(kernel_size: int, in_channels: int) -> bool:
  """Whether ``conv`` at stride 2 takes the space-to-depth gradients."""
  return kernel_size >= 5 or (
    kernel_size == 3 and in_channels <= SPACE_TO_DEPTH_3X3_MAX_CHANNELS
  )


def conv(x: Array, kernel: Array, stride: int) -> Array:
  """A plain convolution (HWIO ``kernel``), SAME padding; stride 2 takes the faster
  gradients (``uses_space_to_depth``)."""
  k = kernel.shape[0]
  if stride != 2:
    return _lax_conv(x, kernel, stride)
  if k == 1:  # SAME pads nothing: every second pixel, then a 1x1 convolution
    return _lax_conv(x[:, ::2, ::2], kernel, 1)
  if not uses_space_to_depth(k, kernel.shape[2]):
    return _lax_conv(x, kernel, 2)
  return _strided_conv(x, kernel)


# --- max pooling -------------------------------------------------------------------------


def _max_and_argmax(x: Array, window: int) -> tuple[Array, Array]:
  """Stride-1 SAME max pooling and, per output, the first window tap (row-major)
  holding the maximum."""
  if not 1 <= window <= 11:  # tap indices are int8
    raise ValueError(f"max_pool_stride1 takes windows of 1..11, got {window}")
  n, h, w, c = x.shape
  lo = (window - 1) // 2
  pads = ((0, 0), (lo, window - 1 - lo), (lo, window - 1 - lo), (0, 0))
  xp = jnp.pad(x, pads, constant_values=-jnp.inf)
  out = first = None
  for i in range(window):
    for j in range(window):
      win = jax.lax.slice(xp, (0, i, j, 0), (n, i + h, j + w, c))
      if out is None:
        out, first = win, jnp.zeros(win.shape, jnp.int8)
      else:
        better = win > out
        out = jnp.where(better, win, out)
        first = jnp.where(better, jnp.int8(i * window + j), first)
  return out, first


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_stride1(x: Array, window: int) -> Array:
  """Max pooling over ``window x window`` windows at stride 1, SAME padding."""
  return _max_and_argmax(x, window)[0]


def _max_pool_forward(x, window):
  return _max_and_argmax(x, window)


def _max_pool_backward(window, first, g):
  # Input p is tap (i, j) of output p - (i - lo, j - lo); it receives that output's
  # gradient if the tap was the output's first maximum.
  n, h, w, c = g.shape
  lo = (window - 1) // 2
  pads = ((0, 0), (window - 1 - lo, lo), (window - 1 - lo, lo), (0, 0))
  gp = jnp.pad(g, pads)
  fp = jnp.pad(first, pads, constant_values=-1)
  dx = None
  for i in range(window):
    for j in range(window):
      start = (0, window - 1 - i, window - 1 - j, 0)
      end = (n, window - 1 - i + h, window - 1 - j + w, c)
      term = jnp.where(
        jax.lax.slice(fp, start, end) == i * window + j,
        jax.lax.slice(gp, start, end),
        0.0,
      )
      dx = term if dx is None else dx + term
  return (dx.astype(g.dtype),)


max_pool_stride1.defvjp(_max_pool_forward, _max_pool_backward)
