"""Exact Gaussian-process regression in JAX, for Bayesian optimization in the latent space.

Kernels are functions of the squared scaled distance, computed for whole matrices with
matrix products; conditioning returns a small NamedTuple. Targets are standardized before
fitting. Hyperparameters (ARD length scales, amplitude, noise, constant mean) live in an
unconstrained ``GPParams`` pytree (logs of the positive ones) and are fitted either by
MAP with optax from several restarts (``fit_map``) or sampled with numpyro NUTS
(``nasq.gp_numpyro.fit_nuts``), the acquisition then averaging over samples.

Priors (``log_prior``): length scales LogNormal(sqrt(2) + log(d) / 2, sqrt(3)), which
scales with the dimension as recommended for BO in tens of dimensions (Hvarfner, Hellsten
& Nardi 2024, the BoTorch default); amplitude LogNormal(0, 1); noise variance
LogNormal(log(1e-2), 1.5); mean Normal(0, 1) (targets are standardized).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

Array = jax.Array
PRNGKey = jax.Array

KERNELS = ("matern52", "rbf")
JITTERS = (0.0, 1e-8, 1e-6, 1e-4, 1e-2)  # relative to the mean diagonal, tried in turn


class GPParams(NamedTuple):
  """Unconstrained hyperparameters."""

  log_lengthscale: Array  # [d]
  log_amplitude: Array  # [] signal variance = exp(2 * log_amplitude)
  log_noise: Array  # [] noise variance = exp(log_noise)
  mean: Array  # [] constant mean (standardized units)


class Posterior(NamedTuple):
  """A GP conditioned on data (standardized targets)."""

  x: Array  # [n, d]
  alpha: Array  # [n] K^-1 (y - mean)
  chol: Array  # [n, n] lower Cholesky factor of K + noise I (+ jitter)
  params: GPParams
  jitter: Array  # [] the jitter that was needed
  mask: Array  # [n] 1 for real rows, 0 for padding


def default_params(dim: int) -> GPParams:
  """The prior's central values: the first restart of ``fit_map``."""
  return GPParams(
    jnp.full((dim,), math.sqrt(2) + 0.5 * math.log(dim)),
    jnp.asarray(0.0),
    jnp.asarray(math.log(1e-2)),
    jnp.asarray(0.0),
  )


# --- kernels ----------------------------------------------------------------------------


def _matern52_r2(r2: Array, variance: Array) -> Array:
  """Matern-5/2 of a squared scaled distance."""
  # The gradient of sqrt at 0 is infinite: take it of a value kept away from 0.
  safe = jnp.where(r2 > 1e-12, r2, 1.0)
  r = math.sqrt(5.0) * jnp.where(r2 > 1e-12, jnp.sqrt(safe), 0.0)
  return variance * (1.0 + r + r * r / 3.0) * jnp.exp(-r)


def _rbf_r2(r2: Array, variance: Array) -> Array:
  return variance * jnp.exp(-0.5 * r2)


_KERNEL_FNS = {"matern52": _matern52_r2, "rbf": _rbf_r2}


def check_kernel(kernel: str) -> None:
  if kernel not in _KERNEL_FNS:
    raise ValueError(f"gp.kernel must be one of {list(KERNELS)}, got {kernel!r}")


def scaled_sq_distances(x1: Array, x2: Array, lengthscale: Array) -> Array:
  """[n1, n2] squared distances after dividing each dimension by its length scale,
  as |a|^2 + |b|^2 - 2 a.b (matrix products: no [n1, n2, d] intermediate, the bulk
  of a likelihood gradient otherwise), clipped at 0 against rounding."""
  a, b = x1 / lengthscale, x2 / lengthscale
  r2 = (
    jnp.sum(a * a, -1)[:, None]
    + jnp.sum(b * b, -1)[None, :]
    - 2.0 * jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  )
  return jnp.maximum(r2, 0.0)


def kernel_matrix(kernel: str, params: GPParams, x1: Array, x2: Array) -> Array:
  """[n1, n2] covariance matrix."""
  r2 = scaled_sq_distances(x1, x2, jnp.exp(params.log_lengthscale))
  return _KERNEL_FNS[kernel](r2, jnp.exp(2 * params.log_amplitude))


# --- conditioning -----------------------------------------------------------------------


def cholesky_with_jitter(matrix: Array) -> tuple[Array, Array]:
  """Lower Cholesky factor of ``matrix``, adding the first jitter of ``JITTERS`` (times
  the mean diagonal) that makes it succeed. Returns (factor, jitter used).

  The search for the jitter runs outside differentiation (a while loop); the returned
  factor is an ordinary, differentiable Cholesky of ``matrix + jitter I``.
  """
  n = matrix.shape[0]
  eye = jnp.eye(n, dtype=matrix.dtype)
  fixed = jax.lax.stop_gradient(matrix)
  scale = jnp.mean(jnp.diag(fixed))
  jitters = jnp.asarray(JITTERS, dtype=matrix.dtype)

  def fails(i):
    return ~jnp.all(jnp.isfinite(jnp.linalg.cholesky(fixed + jitters[i] * scale * eye)))

  i = jax.lax.while_loop(
    lambda i: (i < len(JITTERS) - 1) & fails(i), lambda i: i + 1, jnp.asarray(0)
  )
  jitter = jitters[i] * scale
  return jnp.linalg.cholesky(matrix + jitter * eye), jitter


def condition(
  kernel: str, params: GPParams, x: Array, y: Array, mask: Array | None = None
) -> Posterior:
  """Conditions the GP on (x [n, d], standardized y [n]).

  ``mask`` [n] marks real rows; padded rows (mask 0) are made independent unit-variance
  points with zero residual, so they change neither predictions nor the likelihood, and
  the data can be padded to a fixed size (one compilation for many sizes).
  """
  n = x.shape[0]
  m = jnp.ones(n) if mask is None else mask.astype(x.dtype)
  k = kernel_matrix(kernel, params, x, x) + jnp.exp(params.log_noise) * jnp.eye(n)
  k = k * m[:, None] * m[None, :] + jnp.diag(1.0 - m)
  chol, jitter = cholesky_with_jitter(k)
  alpha = jax.scipy.linalg.cho_solve((chol, True), (y - params.mean) * m)
  return Posterior(x, alpha * m, chol, params, jitter, m)


def predict(kernel: str, post: Posterior, xq: Array) -> tuple[Array, Array]:
  """Posterior mean and variance of the latent function at xq [m, d] (no noise)."""
  kq = kernel_matrix(kernel, post.params, xq, post.x) * post.mask[None, :]
  mean = post.params.mean + kq @ post.alpha
  v = jax.scipy.linalg.solve_triangular(post.chol, kq.T, lower=True)
  var = jnp.exp(2 * post.params.log_amplitude) - jnp.sum(v * v, axis=0)
  return mean, jnp.maximum(var, 1e-12)


def log_marginal_likelihood(
  kernel: str, params: GPParams, x: Array, y: Array, mask: Array | None = None
) -> Array:
  """log p(y | x, params) of standardized targets (real rows only; see ``condition``)."""
  post = condition(kernel, params, x, y, mask)
  n = jnp.sum(post.mask)
  return (
    -0.5 * jnp.dot((y - params.mean) * post.mask, post.alpha)
    - jnp.sum(jnp.log(jnp.diag(post.chol)))
    - 0.5 * n * math.log(2 * math.pi)
  )


# --- priors and fitting -----------------------------------------------------------------


def _lognormal_logpdf(log_x: Array, loc: float, scale: float) -> Array:
  """Log density of log(x) ~ Normal(loc, scale), in the log_x parameterization."""
  return jax.scipy.stats.norm.logpdf(log_x, loc, scale)


def log_prior(params: GPParams) -> Array:
  """Log prior density of the unconstrained hyperparameters (module docstring)."""
  d = params.log_lengthscale.shape[-1]
  return (
    jnp.sum(
      _lognormal_logpdf(params.log_lengthscale, math.sqrt(2) + 0.5 * math.log(d), 3**0.5)
    )
    + _lognormal_logpdf(params.log_amplitude, 0.0, 1.0)
    + _lognormal_logpdf(params.log_noise, math.log(1e-2), 1.5)
    + jax.scipy.stats.norm.logpdf(params.mean, 0.0, 1.0)
  )


def standardize(y: Array, mask: Array | None = None) -> tuple[Array, Array, Array]:
  """(standardized y, mean, std) over the real rows; a constant y gets std 1."""
  m = jnp.ones_like(y) if mask is None else mask.astype(y.dtype)
  count = jnp.maximum(jnp.sum(m), 1.0)
  mean = jnp.sum(y * m) / count
  std = jnp.sqrt(jnp.sum(((y - mean) * m) ** 2) / count)
  std = jnp.where(std > 1e-12, std, 1.0)
  return (y - mean) / std * m, mean, std


def _flatten(params: GPParams) -> Array:
  """[..., d + 3]: the hyperparameters as one vector (per leading index)."""
  return jnp.concatenate(
    [
      params.log_lengthscale,
      jnp.stack([params.log_amplitude, params.log_noise, params.mean], -1),
    ],
    -1,
  )


def _unflatten(theta: Array, d: int) -> GPParams:
  return GPParams(theta[:d], theta[d], theta[d + 1], theta[d + 2])


def neg_log_posterior(
  kernel: str, params: GPParams, x: Array, y: Array, mask: Array | None = None
) -> Array:
  """What a MAP fit minimizes: -(log marginal likelihood + log prior)."""
  return -(log_marginal_likelihood(kernel, params, x, y, mask) + log_prior(params))


def restart_points(
  dim: int, centre: GPParams, key: PRNGKey, num_restarts: int
) -> GPParams:
  """``num_restarts`` starting points (leading axis) of a MAP fit: ``centre`` first,
  then draws around the prior's centre."""
  noise = jax.random.normal(key, (num_restarts, dim + 3))
  base = default_params(dim)
  starts = GPParams(
    base.log_lengthscale + 0.75 * noise[:, :dim],
    base.log_amplitude + 0.5 * noise[:, dim],
    base.log_noise + noise[:, dim + 1],
    base.mean + 0.2 * noise[:, dim + 2],
  )
  return jax.tree.map(lambda s, c: s.at[0].set(c), starts, centre)


@functools.partial(jax.jit, static_argnames="kernel")
def _neg_log_post_and_grad(kernel: str, theta: Array, x: Array, y: Array, mask: Array):
  d = x.shape[1]
  return jax.value_and_grad(
    lambda t: neg_log_posterior(kernel, _unflatten(t, d), x, y, mask)
  )(theta)


def fit_map_lbfgs(
  kernel: str,
  x: Array,
  y: Array,
  key: PRNGKey,
  mask: Array | None = None,
  init: GPParams | None = None,
  *,
  num_restarts: int = 2,
  max_iterations: int = 200,
  min_noise: float = 1e-4,
) -> GPParams:
  """MAP hyperparameters for standardized y by L-BFGS-B (scipy, on the jitted loss and
  gradient, in float64; the noise variance within [``min_noise``, 1], BoTorch's floor,
  as float32 conditioning needs), from ``num_restarts`` starts: the
  prior's centre (or ``init``), then prior draws. Stops at convergence, so it costs what
  the likelihood needs rather than a fixed step count; the best posterior density wins."""
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  n, d = x.shape
  mask = jnp.ones(n, jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
  centre = default_params(d) if init is None else init
  starts = np.asarray(_flatten(restart_points(d, centre, key, num_restarts)), np.float64)
  lower = np.full(d + 3, -np.inf)
  upper = np.full(d + 3, np.inf)
  lower[d + 1], upper[d + 1] = math.log(min_noise), 0.0  # the noise variance
  bounds = scipy.optimize.Bounds(lower, upper)

  def fun(theta):
    value, grad = _neg_log_post_and_grad(kernel, jnp.asarray(theta), x64, y64, mask64)
    value, grad = float(value), np.asarray(grad, np.float64)
    if not (math.isfinite(value) and np.all(np.isfinite(grad))):
      return 1e10, np.zeros_like(grad)
    return value, grad

  best, best_value = starts[0], math.inf
  # In float64, as BoTorch does: in float32 the line search stalls on rounding noise
  # once the noise variance nears its floor, far from the optimum.
  with jax.enable_x64(True):
    x64, y64, mask64 = (np.asarray(v, np.float64) for v in (x, y, mask))
    for theta0 in starts:
      result = scipy.optimize.minimize(
        fun,
        np.clip(theta0, lower, upper),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": max_iterations},
      )
      if math.isfinite(result.fun) and result.fun < best_value:
        best, best_value = result.x, result.fun
  return _unflatten(jnp.asarray(best, jnp.float32), d)


@functools.partial(jax.jit, static_argnames=("kernel", "num_restarts", "steps"))
def fit_map(
  kernel: str,
  x: Array,
  y: Array,
  key: PRNGKey,
  mask: Array | None = None,
  init: GPParams | None = None,
  *,
  num_restarts: int = 4,
  steps: int = 200,
  learning_rate: float = 0.05,
) -> GPParams:
  """MAP hyperparameters for standardized y: Adam from ``num_restarts`` starts (the
  prior's centre, then prior draws), all run at once; the best posterior density wins.

  ``init`` (warm start, e.g. the previous BO step's fit) replaces the centre as the
  first start; with ``num_restarts=1`` only it is refined."""
  d = x.shape[1]
  neg_log_post = functools.partial(neg_log_posterior, kernel, x=x, y=y, mask=mask)
  centre = default_params(d) if init is None else init
  starts = restart_points(d, centre, key, num_restarts)
  tx = optax.adam(learning_rate)

  def run(p0):
    def step(carry, _):
      p, s = carry
      loss, g = jax.value_and_grad(neg_log_post)(p)
      g = jax.tree.map(lambda v: jnp.where(jnp.isfinite(v), v, 0.0), g)
      updates, s = tx.update(g, s, p)
      p = optax.apply_updates(p, updates)
      # Keep the noise within [1e-6, 1] of the signal scale: a floor for conditioning.
      p = p._replace(log_noise=jnp.clip(p.log_noise, math.log(1e-6), 0.0))
      return (p, s), loss

    (p, _), _ = jax.lax.scan(step, (p0, tx.init(p0)), None, length=steps)
    return p, neg_log_post(p)

  finals, losses = jax.vmap(run)(starts)
  losses = jnp.where(jnp.isfinite(losses), losses, jnp.inf)
  best = jnp.argmin(losses)
  return jax.tree.map(lambda v: v[best], finals)
