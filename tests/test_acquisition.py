"""Acquisition functions against SciPy references in float64, and their optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from nasq import acquisition


@pytest.fixture(autouse=True)
def float64():
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", False)


def reference_log_h(z):
  """log(phi(z) + z Phi(z)) in float64: direct above -5, via erfcx (no cancellation
  problem at these magnitudes in float64) below."""
  z = np.asarray(z, dtype=np.float64)
  direct = np.log(stats.norm.pdf(z) + z * stats.norm.cdf(z))
  # h(z) = phi(z) * (1 - |z| sqrt(pi/2) erfcx(|z| / sqrt 2)) for z < 0.
  a = np.abs(z)
  tail = (
    -0.5 * z**2
    - 0.5 * np.log(2 * np.pi)
    + np.log1p(-a * np.sqrt(np.pi / 2) * special.erfcx(a / np.sqrt(2)))
  )
  return np.where(z > -5, direct, tail)


def test_log_h_matches_reference_including_the_far_tail():
  z = np.concatenate([np.linspace(-30, 8, 400), [-1.0, -0.999, 0.0]])
  got = np.asarray(acquisition.log_h(jnp.asarray(z)))
  np.testing.assert_allclose(got, reference_log_h(z), rtol=1e-6, atol=1e-9)
  # Far beyond where the plain formula underflows to log(0) = -inf:
  assert np.all(np.isfinite(np.asarray(acquisition.log_h(jnp.asarray([-200.0, -1e4])))))
  assert np.all(np.diff(np.asarray(acquisition.log_h(jnp.linspace(-50, 5, 200)))) > 0)


def test_log_h_in_float32_stays_finite_and_close():
  jax.config.update("jax_enable_x64", False)
  z = np.linspace(-30, 8, 200).astype(np.float32)
  got = np.asarray(acquisition.log_h(jnp.asarray(z)))
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, reference_log_h(z), rtol=2e-3, atol=1e-4)


def expected_improvement_by_integration(mean, std, best):
  """E[max(Y - best, 0)] for Y ~ N(mean, std), integrated numerically by SciPy: the
  definition, not the closed form the implementation uses."""
  return np.array(
    [
      stats.norm(m, s).expect(lambda y: y - best, lb=best, epsabs=1e-13, epsrel=1e-10)
      for m, s in zip(np.atleast_1d(mean), np.atleast_1d(std), strict=True)
    ]
  )


def test_log_ei_and_pof_against_scipy():
  rng = np.random.default_rng(0)
  mean, std, best = rng.normal(size=50), rng.uniform(0.1, 2, 50), 0.3
  ei = expected_improvement_by_integration(mean, std, best)
  np.testing.assert_allclose(
    np.exp(acquisition.log_expected_improvement(mean, std, best)), ei, rtol=1e-6
  )
  budget = 0.5
  np.testing.assert_allclose(
    acquisition.log_probability_of_feasibility(mean, std, budget),
    stats.norm.logcdf((budget - mean) / std),
    rtol=1e-8,
  )


def test_eic_without_a_feasible_observation_is_the_feasibility():
  mean, std = jnp.asarray([0.0, 1.0]), jnp.asarray([1.0, 1.0])
  log_pof = jnp.log(jnp.asarray([[0.5, 0.2], [0.9, 0.9]]))
  none = acquisition.log_eic(mean, std, 0.0, log_pof, jnp.asarray(False))
  np.testing.assert_allclose(none, log_pof.sum(-1))
  some = acquisition.log_eic(mean, std, 0.0, log_pof, jnp.asarray(True))
  ei = expected_improvement_by_integration([0.0, 1.0], [1.0, 1.0], 0.0)
  np.testing.assert_allclose(some, np.log(ei) + np.log([0.1, 0.81]), rtol=1e-6)


def neg_quadratic(z, aux):
  return -jnp.sum((z - aux["target"]) ** 2)


def test_optimize_finds_the_maximum_and_respects_the_box():
  target = jnp.asarray([1.5, -0.5, 0.25])
  points, values = acquisition.optimize(
    neg_quadratic,
    {"target": target},
    jax.random.key(0),
    jnp.zeros((2, 3)),
    dim=3,
    num_raw=64,
    num_starts=4,
    steps=200,
    learning_rate=0.05,
  )
  np.testing.assert_allclose(points[0], target, atol=1e-2)
  assert np.all(np.diff(np.asarray(values)) <= 0)  # best first
  far = jnp.asarray([9.0, 0.0, 0.0])
  points, _ = acquisition.optimize(
    neg_quadratic,
    {"target": far},
    jax.random.key(1),
    jnp.zeros((1, 3)),
    dim=3,
    num_raw=64,
    num_starts=4,
    steps=300,
    bound=4.0,
  )
  assert float(points[0, 0]) == pytest.approx(4.0, abs=1e-6)
