"""nasq.ops against XLA's own forms of the same layers: outputs and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasq import ops


def normal(shape):
  return jnp.asarray(np.random.default_rng(sum(shape)).normal(size=shape), jnp.float32)


def lax_conv(x, kernel, stride, groups=1):
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    (stride, stride),
    "SAME",
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=groups,
  )


def lax_max_pool(x, window):
  dims = (1, window, window, 1)
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, (1, 1, 1, 1), "SAME")


def assert_same_function(f, g, *args, rtol=2e-5):
  """f and g agree in value and in the gradients of a random projection of the output,
  with respect to every argument (relative to each tensor's largest entry)."""

  def value_and_grads(args, fn):
    y, vjp = jax.vjp(fn, *args)
    cot = np.random.default_rng(7).normal(size=y.shape).astype(np.float32)
    return y, vjp(cot)

  y_f, grads_f = jax.jit(value_and_grads, static_argnums=1)(args, f)
  y_g, grads_g = jax.jit(value_and_grads, static_argnums=1)(args, g)
  assert y_f.shape == y_g.shape
  for a, b in [(y_f, y_g), *zip(grads_f, grads_g, strict=True)]:
    scale = float(jnp.max(jnp.abs(b))) or 1.0
    np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=rtol)


@pytest.mark.parametrize("size", [8, 7, 1])
@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_matches_grouped_convolution(size, kernel_size, stride):
  c = 5
  x = normal((4, size, size, c))
  w = normal((kernel_size, kernel_size, 1, c))
  assert_same_function(
    functools.partial(ops.depthwise_conv, stride=stride),
    functools.partial(lax_conv, stride=stride, groups=c),
    x,
    w,
  )


def test_depthwise_kernel_gradient_sums_over_every_batch_slice(monkeypatch):
  # Slices of the batch smaller than the batch: the scan must add every one of them.
  monkeypatch.setattr(ops, "CACHE_SLICE_BYTES", 1)
  x = normal((6, 9, 9, 3))
  w = normal((3, 3, 1, 3))
  assert ops._batch_slice(6, 9 * 9 * 3 * 4) == 1
  assert_same_function(
    functools.partial(ops.depthwise_conv, stride=1),
    functools.partial(lax_conv, stride=1, groups=3),
    x,
    w,
  )


@pytest.mark.parametrize(
  "n,example_bytes,expected",
  [(128, 1, 128), (128, 100_000, 4), (6, 200_000, 2), (7, 10**9, 1)],
)
def test_batch_slice_is_the_largest_divisor_that_fits(n, example_bytes, expected):
  b = ops._batch_slice(n, example_bytes)
  assert b == expected and n % b == 0


@pytest.mark.parametrize("size", [14, 7, 3, 1])
@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_matches_lax(size, kernel_size, stride):
  x = normal((3, size, size, 4))
  w = normal((kernel_size, kernel_size, 4, 6))
  assert_same_function(
    functools.partial(ops.conv, stride=stride),
    functools.partial(lax_conv, stride=stride),
    x,
    w,
  )


@pytest.mark.parametrize("kernel_size, channels", [(3, 40), (3, 16), (5, 40), (7, 40)])
def test_wide_strided_conv_matches_lax_on_either_gradient_path(kernel_size, channels):
  x = normal((2, 7, 7, channels))
  w = normal((kernel_size, kernel_size, channels, 3))
  assert_same_function(
    functools.partial(ops.conv, stride=2), functools.partial(lax_conv, stride=2), x, w
  )


def test_space_to_depth_serves_the_stride_2_kernels_it_measured_faster_on():
  assert ops.uses_space_to_depth(3, 16) and not ops.uses_space_to_depth(3, 32)
  assert ops.uses_space_to_depth(5, 64) and ops.uses_space_to_depth(7, 64)
  assert not ops.uses_space_to_depth(1, 16)


def test_conv_on_a_non_square_image_matches_lax():
  x = normal((2, 9, 6, 3))
  w = normal((5, 5, 3, 2))
  assert_same_function(
    functools.partial(ops.conv, stride=2), functools.partial(lax_conv, stride=2), x, w
  )


@pytest.mark.parametrize("size", [8, 7, 2, 1])
def test_max_pool_matches_reduce_window(size):
  x = normal((3, size, size, 4))
  assert_same_function(
    functools.partial(ops.max_pool_stride1, window=3),
    functools.partial(lax_max_pool, window=3),
    x,
  )


def test_max_pool_gives_a_tied_window_gradient_to_its_first_maximum():
  # After a ReLU most windows tie at zero: the gradient must go where XLA's
  # select-and-scatter sends it (the first maximum in row-major order), once.
  x = jax.nn.relu(normal((2, 8, 8, 3)))
  x = x.at[:, 2:5].set(0.0).at[:, 6, 6].set(1.5).at[:, 6, 7].set(1.5)
  assert_same_function(
    functools.partial(ops.max_pool_stride1, window=3),
    functools.partial(lax_max_pool, window=3),
    x,
    rtol=1e-6,
  )
  grad = jax.grad(lambda x: ops.max_pool_stride1(x, 3).sum())(x)
  # Every output passes its gradient to exactly one input.
  np.testing.assert_allclose(float(grad.sum()), x.size, rtol=1e-6)
