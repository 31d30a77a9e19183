import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasq import quant


def np_quantize(w, bits):
  """Independent NumPy reference of symmetric per-output-channel quantization."""
  qmax = 2 ** (bits - 1) - 1
  flat = w.reshape(-1, w.shape[-1])
  absmax = np.abs(flat).max(0)
  scale = np.where(absmax > 0, absmax / qmax, 1.0)
  return np.clip(np.round(w / scale), -qmax, qmax), scale


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_levels_idempotence_and_reference(bits):
  rng = np.random.default_rng(bits)
  w = rng.normal(size=(3, 3, 16, 24)).astype(np.float32)
  w[..., 5] = 0.0  # an all-zero channel
  fq = np.asarray(quant.fake_quantize(jnp.asarray(w), bits))
  for count in quant.distinct_values_per_channel(fq):
    assert count <= 2**bits - 1
  codes, scale = np_quantize(w.astype(np.float64), bits)
  np.testing.assert_allclose(fq, codes * scale, rtol=1e-6, atol=1e-7)
  jcodes, jscale = quant.quantize(jnp.asarray(w), bits)
  np.testing.assert_array_equal(np.asarray(jcodes), codes)
  fq2 = np.asarray(quant.fake_quantize(jnp.asarray(fq), bits))
  np.testing.assert_allclose(fq2, fq, rtol=1e-6, atol=0)
  np.testing.assert_array_equal(
    np.asarray(quant.quantize(jnp.asarray(fq), bits)[0]), codes
  )
  assert np.all(fq[..., 5] == 0)


def test_straight_through_gradient():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(5, 7)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(5, 7)), jnp.float32)
  grad = jax.grad(lambda w: jnp.sum(quant.fake_quantize(w, 4) * g))(w)
  np.testing.assert_array_equal(np.asarray(grad), np.asarray(g))


def test_32_bits_is_identity():
  w = jnp.linspace(-1, 1, 30).reshape(5, 6)
  assert quant.fake_quantize(w, 32) is w


@pytest.mark.parametrize("bits", [0, 1, 9, 16, 33])
def test_bad_bits(bits):
  with pytest.raises(ValueError, match=r"weight_bits must be an integer in \[2, 8\]"):
    quant.WeightQuantizer(bits)
  with pytest.raises(ValueError, match="quant.weight_bits"):
    quant.QuantConfig(bits)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_folding_batchnorm_commutes_with_per_channel_quantization(bits):
  """Why the export may fold BatchNorm after quantizing: each output channel's scale
  absorbs the channel's BatchNorm factor (of either sign), so scaling a quantized
  kernel per channel is quantizing the scaled kernel."""
  rng = np.random.default_rng(bits)
  kernel = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
  factor = rng.uniform(0.2, 3.0, 6).astype(np.float32) * rng.choice([-1, 1], 6)
  folded_then_quantized = quant.fake_quantize(kernel * factor, bits)
  quantized_then_folded = quant.fake_quantize(kernel, bits) * factor
  np.testing.assert_allclose(folded_then_quantized, quantized_then_folded, rtol=1e-5)

  # Per-tensor quantization would not commute: the property is the scheme's.
  def per_tensor(w):
    codes, scale = quant.quantize(w.reshape(-1, 1), bits, channel_axis=-1)
    return np.asarray(codes * scale).reshape(w.shape)

  assert not np.allclose(per_tensor(kernel * factor), per_tensor(kernel) * factor)
