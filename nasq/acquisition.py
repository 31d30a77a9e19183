"""Acquisition functions for constrained Bayesian optimization, and their optimizer.

* ``log_expected_improvement``: log EI for maximization, computed in log space so it stays
  finite and accurate far in the lower tail (the formulation of Ament et al. 2023, used
  by BoTorch's LogEI).
* ``log_probability_of_feasibility``: log P(c(z) <= budget) for a Gaussian prediction of
  the cost c.
* ``log_eic``: expected improvement with constraints (Gardner et al. 2014),
  ``log EI + sum_j log PoF_j``; when nothing feasible has been observed yet it is
  ``sum_j log PoF_j`` alone (find a feasible point first).
* ``fit_posteriors``, ``gp_log_eic``: the one GP fit and the one acquisition every BO
  path uses (latent BO ranks decoded candidates with it; ``constrained_bo_step`` ascends
  it).
* ``optimize``: many jitted, vmapped gradient ascents from prior samples and perturbations
  of the best points, returning candidates best first.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import erfcx, log_ndtr

from nasq import gp, gp_numpyro

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_LOG_SQRT_PI_2 = 0.5 * math.log(math.pi / 2)


def _log1mexp(x: Array) -> Array:
  """log(1 - exp(x)) for x < 0, accurate on both sides of -log 2."""
  return jnp.where(
    x > -math.log(2), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(jnp.minimum(x, 0.0)))
  )


def log_h(z: Array) -> Array:
  """log(phi(z) + z Phi(z)), the standardized EI, stable for all z.

  Three regions: above -1 the direct formula; on [-12, -1]
  ``h = phi(z) (1 - |z| Phi(z) / phi(z))`` with the Mills ratio from ``erfcx``; below -12
  the asymptotic series ``1 - |z| R(|z|) = z^-2 - 3 z^-4 + 15 z^-6 - ...`` to six terms
  (truncation error below 1e-7 relative there). It also keeps ``erfcx`` below 9.2,
  beyond which this jax version returns 0 in float32.
  """
  bound, far = -1.0, -12.0
  zu = jnp.maximum(z, bound)
  upper = jnp.log(jnp.exp(-0.5 * zu * zu - _LOG_SQRT_2PI) + zu * jnp.exp(log_ndtr(zu)))
  zl = jnp.minimum(z, bound)
  zm = jnp.maximum(zl, far)
  w = jnp.log(erfcx(-zm / math.sqrt(2)) * jnp.abs(zm)) + _LOG_SQRT_PI_2
  zf = jnp.minimum(zl, far)
  u = 1.0 / (zf * zf)
  series = u * (1.0 + u * (-3.0 + u * (15.0 + u * (-105.0 + u * (945.0 - 10395.0 * u)))))
  tail = jnp.where(zl > far, _log1mexp(w), jnp.log(series))
  lower = -0.5 * zl * zl - _LOG_SQRT_2PI + tail
  return jnp.where(z > bound, upper, lower)


def log_expected_improvement(mean: Array, std: Array, best: Array) -> Array:
  """log E[max(f - best, 0)] for f ~ N(mean, std^2) (maximization)."""
  return log_h((mean - best) / std) + jnp.log(std)


def log_probability_of_feasibility(mean: Array, std: Array, budget: Array) -> Array:
  """log P(c <= budget) for c ~ N(mean, std^2)."""
  return log_ndtr((budget - mean) / std)


def log_eic(
  mean: Array,
  std: Array,
  best: Array,
  log_pof: Array,
  feasible_observed: Array,
) -> Array:
  """log EI x prod PoF; just log prod PoF while no feasible point has been observed.

  Args:
    mean, std: the objective's predictive distribution.
    best: the best feasible observed value (ignored while none is feasible).
    log_pof: [..., k] log probabilities of feasibility, one per constraint.
    feasible_observed: whether any feasible point has been observed.
  """
  total_pof = jnp.sum(log_pof, axis=-1)
  return jnp.where(
    feasible_observed, log_expected_improvement(mean, std, best) + total_pof, total_pof
  )


@functools.partial(
  jax.jit, static_argnames=("acquisition", "num_raw", "num_starts", "steps", "dim")
)
def optimize(
  acquisition: Callable[[Array, PyTree], Array],
  aux: PyTree,
  key: PRNGKey,
  anchors: Array,
  *,
  dim: int,
  num_raw: int = 512,
  num_starts: int = 16,
  steps: int = 100,
  learning_rate: float = 0.05,
  perturbation: float = 0.2,
  bound: float = 4.0,
) -> tuple[Array, Array]:
  """Maximizes ``acquisition(z [d], aux) -> scalar`` over the box [-bound, bound]^d.

  ``acquisition`` is static (one compilation per function); everything that changes
  between BO steps (the GP posterior, budgets) travels in the pytree ``aux``.

  Raw candidates are ``num_raw`` prior samples plus Gaussian perturbations of the
  ``anchors`` (e.g. the best observed points); the ``num_starts`` best of them are
  refined by Adam in parallel. Returns (points [num_starts, d], values), best first.
  """
  k_prior, k_pert = jax.random.split(key)
  prior = jax.random.normal(k_prior, (num_raw, dim))
  reps = max(1, num_raw // max(1, anchors.shape[0]))
  pert = jnp.repeat(anchors, reps, axis=0)
  pert = pert + perturbation * jax.random.normal(k_pert, pert.shape)
  raw = jnp.clip(jnp.concatenate([prior, pert, anchors]), -bound, bound)
  acq = jax.vmap(lambda z: acquisition(z, aux))
  raw_values = acq(raw)
  raw_values = jnp.where(jnp.isfinite(raw_values), raw_values, -jnp.inf)
  _, top = jax.lax.top_k(raw_values, num_starts)
  starts = raw[top]
  tx = optax.adam(learning_rate)

  def ascend(z0):
    def step(carry, _):
      z, s = carry
      g = jax.grad(lambda v: -acquisition(v, aux))(z)
      g = jnp.where(jnp.isfinite(g), g, 0.0)
      updates, s = tx.update(g, s, z)
      z = jnp.clip(optax.apply_updates(z, updates), -bound, bound)
      return (z, s), None

    (z, _), _ = jax.lax.scan(step, (z0, tx.init(z0)), None, length=steps)
    return z

  refined = jax.vmap(ascend)(starts)
  values = acq(refined)
  # A refinement that made things worse keeps its start.
  start_values = raw_values[top]
  better = values >= start_values
  points = jnp.where(better[:, None], refined, starts)
  values = jnp.where(better, values, start_values)
  values = jnp.where(jnp.isfinite(values), values, -jnp.inf)
  order = jnp.argsort(-values)
  return points[order], values[order]


class Fit(NamedTuple):
  """GP hyperparameter samples (one for MAP) and the posteriors conditioned on them."""

  samples: gp.GPParams  # leading axis: samples
  posts: gp.Posterior  # leading axis: samples


@functools.partial(jax.jit, static_argnames="kernel")
def condition_samples(
  kernel: str, samples: gp.GPParams, x: Array, ys: Array, mask: Array
) -> gp.Posterior:
  """Posteriors for every hyperparameter sample; ``ys`` [n] or one row per sample."""
  ys = jnp.broadcast_to(ys, (jax.tree.leaves(samples)[0].shape[0], x.shape[0]))
  return jax.vmap(functools.partial(gp.condition, kernel), in_axes=(0, None, 0, None))(
    samples, x, ys, mask
  )


@functools.partial(jax.jit, static_argnames="kernel")
def _predict_samples(kernel: str, posts: gp.Posterior, xq: Array) -> tuple[Array, Array]:
  return jax.vmap(lambda p: gp.predict(kernel, p, xq))(posts)


def predict_samples(kernel: str, posts: gp.Posterior, xq: Array) -> tuple[Array, Array]:
  """Mean and variance [samples, m] at ``xq`` [m, d] under every posterior (``xq``
  padded to a multiple of 32 rows, so varying m shares compiled programs)."""
  xq = np.asarray(xq, np.float32)
  m = xq.shape[0]
  size = max(32, -(-m // 32) * 32)
  padded = np.concatenate([xq, np.zeros((size - m, xq.shape[1]), np.float32)])
  mean, var = _predict_samples(kernel, posts, jnp.asarray(padded))
  return mean[:, :m], var[:, :m]


def fit_posteriors(
  kernel: str,
  x: Array,
  ys: Array,
  key: PRNGKey,
  mask: Array | None = None,
  *,
  method: str = "map",
  init: gp.GPParams | None = None,
  map_optimizer: str = "adam",
  map_restarts: int = 4,
  map_steps: int = 200,
  nuts_warmup: int = 200,
  nuts_samples: int = 200,
  nuts_kept: int = 16,
) -> Fit:
  """Fits GP hyperparameters to standardized ``ys`` (MAP from restarts, warm-started at
  ``init`` if given, by batched Adam or by L-BFGS-B (``map_optimizer``); or NUTS
  samples) and conditions on the data. The one fit every BO path uses (latent BO and
  ``constrained_bo_step``)."""
  x = jnp.asarray(x, jnp.float32)
  mask = jnp.ones(x.shape[0], jnp.float32) if mask is None else jnp.asarray(mask)
  if method == "nuts":
    samples = gp_numpyro.fit_nuts(
      kernel,
      x,
      ys,
      key,
      mask,
      num_warmup=nuts_warmup,
      num_samples=nuts_samples,
      num_kept=nuts_kept,
    )
  else:
    if map_optimizer == "lbfgs":
      params = gp.fit_map_lbfgs(kernel, x, ys, key, mask, init, num_restarts=map_restarts)
    elif map_optimizer == "adam":
      params = gp.fit_map(
        kernel, x, ys, key, mask, init, num_restarts=map_restarts, steps=map_steps
      )
    else:
      raise ValueError(f"map_optimizer must be 'adam' or 'lbfgs', got {map_optimizer!r}")
    samples = jax.tree.map(lambda v: v[None], params)
  return Fit(samples, condition_samples(kernel, samples, x, ys, mask))


def gp_log_eic(kernel: str, z: Array, aux: PyTree) -> Array:
  """log EIC at one point ``z`` [d]: log EI of the objective GP plus the log PoF of a GP
  per constraint (none: plain log EI), each averaged over hyperparameter samples.

  ``aux``: ``objective`` (posteriors), ``best`` (incumbent, standardized),
  ``feasible_observed``, ``constraints`` (a list of posteriors) and ``limits``."""

  def predict(posts):
    mean, var = jax.vmap(lambda p: gp.predict(kernel, p, z[None]))(posts)
    return mean[:, 0], jnp.sqrt(var[:, 0])

  mean, std = predict(aux["objective"])
  log_pof = []
  for posts, limit in zip(aux["constraints"], aux["limits"], strict=True):
    cm, cs = predict(posts)
    log_pof.append(log_probability_of_feasibility(cm, cs, limit))
  log_pof = jnp.stack(log_pof, -1) if log_pof else jnp.zeros((mean.shape[0], 0))
  per_sample = log_eic(mean, std, aux["best"], log_pof, aux["feasible_observed"])
  # Average the acquisition (not its log) over hyperparameter samples.
  return jax.nn.logsumexp(per_sample) - jnp.log(per_sample.shape[0])


# One function object per kernel, so ``optimize`` compiles once per kernel and shape.
GP_LOG_EIC = {k: functools.partial(gp_log_eic, k) for k in gp.KERNELS}


@functools.partial(jax.jit, static_argnames="kernel")
def batch_log_eic(kernel: str, z: Array, aux: PyTree) -> Array:
  """``gp_log_eic`` at every row of ``z`` [m, d]."""
  return jax.vmap(lambda v: gp_log_eic(kernel, v, aux))(z)


def constrained_bo_step(
  x: Array,
  y: Array,
  constraints: Array,
  limits: Array,
  key: PRNGKey,
  *,
  kernel: str = "matern52",
  hyperparameters: str = "map",
  bound: float = 4.0,
  num_raw: int = 512,
  num_starts: int = 16,
  steps: int = 100,
  nuts_warmup: int = 200,
  nuts_samples: int = 200,
  map_optimizer: str = "lbfgs",
  map_restarts: int | None = None,
) -> Array:
  """One BO step on raw data: fit GPs to ``y`` [n] (maximized) and to each constraint
  column of ``constraints`` [n, k] (feasible when <= ``limits`` [k]), then maximize EIC.
  Returns the proposed point [d].

  MAP hyperparameters come from L-BFGS-B from the prior's centre (``map_optimizer``,
  ``map_restarts``, default 1; "adam" runs 4 restarts x 200 Adam steps at once instead).
  """
  restarts = map_restarts or (1 if map_optimizer == "lbfgs" else 4)
  x = jnp.asarray(x, jnp.float32)
  keys = jax.random.split(key, constraints.shape[1] + 2)

  def fit(values, k):
    ys, mean, std = gp.standardize(jnp.asarray(values, jnp.float32))
    method = "nuts" if hyperparameters == "nuts" else "map"
    fitted = fit_posteriors(
      kernel,
      x,
      ys,
      k,
      method=method,
      map_optimizer=map_optimizer,
      map_restarts=restarts,
      nuts_warmup=nuts_warmup,
      nuts_samples=nuts_samples,
    )
    return fitted.posts, ys, mean, std

  obj_posts, ys, _, _ = fit(y, keys[0])
  con_posts, scaled_limits = [], []
  feasible = jnp.ones(len(y), bool)
  for j in range(constraints.shape[1]):
    posts, _, mean, std = fit(constraints[:, j], keys[j + 1])
    con_posts.append(posts)
    scaled_limits.append((limits[j] - mean) / std)
    feasible &= constraints[:, j] <= limits[j]
  best = jnp.max(jnp.where(feasible, ys, -jnp.inf))
  aux = {
    "objective": obj_posts,
    "constraints": con_posts,
    "limits": scaled_limits,
    "best": jnp.where(jnp.isfinite(best), best, 0.0),
    "feasible_observed": jnp.any(feasible),
  }
  anchors = x[jnp.argsort(-jnp.where(feasible, ys, -jnp.inf))[:5]]
  points, _ = optimize(
    GP_LOG_EIC[kernel],
    aux,
    keys[-1],
    anchors,
    dim=x.shape[1],
    num_raw=num_raw,
    num_starts=num_starts,
    steps=steps,
    bound=bound,
  )
  return points[0]
