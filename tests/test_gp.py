"""The GP against NumPy/SciPy references in float64, and its fitting."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg, stats

from nasq import gp


@pytest.fixture(autouse=True)
def float64():
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", False)


def numpy_matern52(x1, x2, ls, var):
  r = np.sqrt(5) * np.sqrt((((x1[:, None] - x2[None]) / ls) ** 2).sum(-1))
  return var * (1 + r + r**2 / 3) * np.exp(-r)


def numpy_rbf(x1, x2, ls, var):
  return var * np.exp(-0.5 * (((x1[:, None] - x2[None]) / ls) ** 2).sum(-1))


def make_params(d, rng):
  return gp.GPParams(
    jnp.asarray(rng.normal(size=d) * 0.3),
    jnp.asarray(0.2),
    jnp.asarray(np.log(0.05)),
    jnp.asarray(0.1),
  )


@pytest.mark.parametrize("kernel,ref", [("matern52", numpy_matern52), ("rbf", numpy_rbf)])
def test_kernels_and_likelihood_match_numpy(kernel, ref):
  rng = np.random.default_rng(0)
  d, n = 4, 30
  x = rng.normal(size=(n, d))
  y = np.sin(x.sum(1)) + 0.1 * rng.normal(size=n)
  p = make_params(d, rng)
  ls, var, noise = (
    np.exp(p.log_lengthscale),
    np.exp(2 * p.log_amplitude),
    np.exp(p.log_noise),
  )
  k = ref(x, x, ls, var)
  np.testing.assert_allclose(gp.kernel_matrix(kernel, p, x, x), k, rtol=1e-10)
  cov = k + noise * np.eye(n)
  expected = stats.multivariate_normal(mean=np.full(n, 0.1), cov=cov).logpdf(y)
  got = float(gp.log_marginal_likelihood(kernel, p, jnp.asarray(x), jnp.asarray(y)))
  np.testing.assert_allclose(got, expected, rtol=1e-9)
  # Predictions against the textbook formulas.
  xq = rng.normal(size=(7, d))
  kq = ref(xq, x, ls, var)
  mean = 0.1 + kq @ linalg.solve(cov, y - 0.1)
  varq = var - np.einsum("ij,ji->i", kq, linalg.solve(cov, kq.T))
  post = gp.condition(kernel, p, jnp.asarray(x), jnp.asarray(y))
  m, v = gp.predict(kernel, post, jnp.asarray(xq))
  np.testing.assert_allclose(m, mean, rtol=1e-8)
  np.testing.assert_allclose(v, varq, rtol=1e-6, atol=1e-10)


def test_padding_changes_nothing():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(12, 3))
  y = rng.normal(size=12)
  p = make_params(3, rng)
  xp = np.concatenate([x, rng.normal(size=(5, 3))])
  yp = np.concatenate([y, rng.normal(size=5)])
  mask = np.r_[np.ones(12), np.zeros(5)]
  a = gp.log_marginal_likelihood("matern52", p, x, y)
  b = gp.log_marginal_likelihood("matern52", p, xp, yp, jnp.asarray(mask))
  np.testing.assert_allclose(a, b, rtol=1e-10)
  xq = rng.normal(size=(4, 3))
  m1, v1 = gp.predict("matern52", gp.condition("matern52", p, x, y), xq)
  m2, v2 = gp.predict("matern52", gp.condition("matern52", p, xp, yp, mask), xq)
  np.testing.assert_allclose(m1, m2, rtol=1e-9)
  np.testing.assert_allclose(v1, v2, rtol=1e-9)


def test_jitter_escalates_for_duplicate_points():
  x = jnp.zeros((6, 2))  # identical points: singular without noise
  p = gp.GPParams(jnp.zeros(2), jnp.asarray(0.0), jnp.asarray(np.log(1e-30)), 0.0)
  k = gp.kernel_matrix("rbf", p, x, x)
  chol, jitter = gp.cholesky_with_jitter(k)
  assert bool(jnp.all(jnp.isfinite(chol)))
  assert float(jitter) > 0
  np.testing.assert_allclose(chol @ chol.T, k + jitter * jnp.eye(6), atol=1e-9)
  _, none_needed = gp.cholesky_with_jitter(k + jnp.eye(6))
  assert float(none_needed) == 0.0


@pytest.mark.parametrize("fit", [gp.fit_map, gp.fit_map_lbfgs], ids=["adam", "lbfgs"])
def test_map_fit_improves_the_posterior_and_predicts(fit):
  rng = np.random.default_rng(2)
  d = 3
  x = rng.uniform(-2, 2, size=(60, d))
  f = lambda v: np.sin(2 * v[:, 0]) + 0.1 * v[:, 1]  # noqa: E731 (dim 2 irrelevant)
  y, _, _ = gp.standardize(jnp.asarray(f(x)))
  fitted = fit("matern52", jnp.asarray(x), y, jax.random.key(0))

  def neg_post(p):
    return -(gp.log_marginal_likelihood("matern52", p, x, y) + gp.log_prior(p))

  assert float(neg_post(fitted)) < float(neg_post(gp.default_params(d)))
  ls = np.exp(np.asarray(fitted.log_lengthscale))
  assert ls[0] < ls[2]  # the relevant dimension gets the shorter length scale
  xq = rng.uniform(-2, 2, size=(200, d))
  m, _ = gp.predict("matern52", gp.condition("matern52", fitted, x, y), xq)
  yq = (f(xq) - f(x).mean()) / f(x).std()
  assert np.corrcoef(np.asarray(m), yq)[0, 1] > 0.95


def test_lbfgs_fit_ignores_padding_and_keeps_the_noise_floor():
  rng = np.random.default_rng(4)
  x = rng.uniform(-2, 2, size=(30, 2))
  y, _, _ = gp.standardize(jnp.asarray(np.cos(x[:, 0]) * x[:, 1]))  # noise-free
  plain = gp.fit_map_lbfgs("matern52", jnp.asarray(x), y, jax.random.key(0))
  padded_x = np.concatenate([x, rng.uniform(-2, 2, size=(10, 2))])
  padded_y = jnp.concatenate([y, jnp.asarray(rng.normal(size=10), jnp.float32)])
  mask = jnp.asarray([1.0] * 30 + [0.0] * 10)
  padded = gp.fit_map_lbfgs(
    "matern52", jnp.asarray(padded_x), padded_y, jax.random.key(0), mask
  )
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(padded), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-3)
  # Noise-free data drive the noise down to, never below, the floor.
  assert math.log(1e-4) - 1e-6 <= float(plain.log_noise) < math.log(1e-2)


def test_unknown_kernel_is_named():
  with pytest.raises(ValueError, match="gp.kernel must be one of"):
    gp.check_kernel("linear")


def test_nuts_samples_the_same_posterior_family():
  from nasq import gp_numpyro

  rng = np.random.default_rng(3)
  x = rng.uniform(-2, 2, size=(25, 2))
  y, _, _ = gp.standardize(jnp.asarray(np.sin(2 * x[:, 0])))
  samples = gp_numpyro.fit_nuts(
    "matern52",
    jnp.asarray(x),
    y,
    jax.random.key(0),
    num_warmup=150,
    num_samples=150,
    num_kept=8,
  )
  assert samples.log_lengthscale.shape == (8, 2)
  assert all(bool(jnp.all(jnp.isfinite(v))) for v in samples)
  # The relevant dimension has the shorter length scale in most samples.
  assert (
    float(jnp.mean(samples.log_lengthscale[:, 0] < samples.log_lengthscale[:, 1])) >= 0.75
  )
