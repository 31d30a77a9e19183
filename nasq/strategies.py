"""Search strategies behind one interface, and the budget they all answer to.

A strategy proposes architectures, best first, given the history; it never trains or
costs anything itself. The search loop (``nasq.loop.run_strategy``) decodes each
proposal, computes its exact costs, and trains it only if it fits the ``Budget`` and was
not evaluated before; every strategy sees the same loop, so comparisons are fair.

* ``latent_bo``: a GP on the latent codes of the evaluated architectures, expected
  improvement with constraints, the feasibility of each budget from the autoencoder's
  convex cost predictor (its held-out RMSE as the predictive spread).
* ``random``: uniform over the valid architectures that fit the budget (rejection).
* ``evolution``: regularized evolution (Real et al. 2019): tournament selection in an
  aging population, one-token mutations.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from nasq import acquisition, gp, gp_numpyro
from nasq.autoencoder import TrainedAutoencoder
from nasq.costs import Budget, compute_costs
from nasq.history import History
from nasq.spaces import SearchSpace

Array = jax.Array

STRATEGIES = ("latent_bo", "random", "evolution")
HYPERPARAMETERS = ("map", "nuts")


@dataclasses.dataclass(frozen=True)
class StrategySettings:
  """Settings of every strategy (the ``strategies`` section; each reads its own)."""

  random_batch: int = 256  # Architectures drawn per rejection-sampling round.
  # Regularized evolution.
  population_size: int = 20
  tournament_size: int = 5
  # Latent BO.
  kernel: str = "matern52"  # GP kernel: matern52 or rbf (ARD).
  hyperparameters: str = "map"  # "map" (optax, restarts) or "nuts" (numpyro, averaged).
  map_restarts: int = 4
  map_steps: int = 200
  nuts_warmup: int = 200
  nuts_samples: int = 200
  nuts_kept: int = 16  # Posterior samples the acquisition is averaged over.
  num_raw: int = (
    512  # Raw acquisition candidates (prior samples + perturbed best points).
  )
  num_starts: int = 16  # Gradient ascents from the best raw candidates.
  ascent_steps: int = 100
  num_anchors: int = 5  # Best observed points whose perturbations seed the ascent.

  def __post_init__(self):
    gp.check_kernel(self.kernel)
    if self.hyperparameters not in HYPERPARAMETERS:
      raise ValueError(
        f"strategies.hyperparameters must be one of {list(HYPERPARAMETERS)}, got "
        f"{self.hyperparameters!r}"
      )
    if not 1 <= self.tournament_size <= self.population_size:
      raise ValueError(
        f"strategies.tournament_size must be in [1, population_size="
        f"{self.population_size}], got {self.tournament_size}"
      )


@dataclasses.dataclass(frozen=True)
class Proposal:
  tokens: tuple[int, ...]
  latent: tuple[float, ...] | None = None


@dataclasses.dataclass
class SearchContext:
  """What strategies may read."""

  space: SearchSpace
  budget: Budget
  weight_bits: int
  activation_bits: int
  history: History
  autoencoder: TrainedAutoencoder | None = None  # for latent_bo
  # Architectures being evaluated right now (asynchronous search): not to be proposed.
  pending: list[tuple[int, ...]] = dataclasses.field(default_factory=list)

  def is_taken(self, tokens: tuple[int, ...]) -> bool:
    """Evaluated already, or being evaluated."""
    return self.history.evaluated_index(tokens) is not None or tokens in self.pending

  def costs(self, tokens: tuple[int, ...]) -> dict[str, float]:
    arch = self.space.decode(tokens)
    return compute_costs(arch, self.weight_bits, self.activation_bits).summary()


@runtime_checkable
class Strategy(Protocol):
  """Proposes architectures to evaluate, best first; never trains or costs them."""

  name: str

  def propose(self, ctx: SearchContext, key: Array) -> list[Proposal]: ...


def _numpy_rng(key: Array) -> np.random.Generator:
  """A NumPy generator seeded by a JAX key, for host-side sampling and mutation."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())


# --- random -----------------------------------------------------------------------------


class RandomSearch:
  """Uniform over the valid architectures that fit the budget (rejection sampling)."""

  name = "random"

  def __init__(self, batch: int = 256):
    self.batch = int(batch)

  def sample_feasible(
    self, ctx: SearchContext, rng: np.random.Generator, n: int, max_draws: int = 200_000
  ) -> list[tuple[int, ...]]:
    """``n`` distinct unevaluated feasible token vectors (fewer if none can be found)."""
    out: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    draws = 0
    while len(out) < n and draws < max_draws:
      for t in ctx.space.sample_tokens(rng, self.batch):
        t = tuple(int(v) for v in t)
        draws += 1
        if t in seen or ctx.is_taken(t):
          continue
        seen.add(t)
        if ctx.budget.fits(ctx.costs(t)):
          out.append(t)
          if len(out) == n:
            break
    return out

  def propose(self, ctx: SearchContext, key: Array) -> list[Proposal]:
    rng = _numpy_rng(key)
    return [Proposal(t) for t in self.sample_feasible(ctx, rng, 1)]


# --- regularized evolution --------------------------------------------------------------


class RegularizedEvolution:
  """Real et al. (2019): the population is the ``population_size`` most recent
  successful evaluations; a parent is the best of ``tournament_size`` of them drawn at
  random; its child changes one token (``space.mutate``)."""

  name = "evolution"

  def __init__(self, population_size: int = 20, tournament_size: int = 5):
    if not 1 <= tournament_size <= population_size:
      raise ValueError(
        f"strategies.tournament_size must be in [1, population_size="
        f"{population_size}], got {tournament_size}"
      )
    self.population_size = int(population_size)
    self.tournament_size = int(tournament_size)
    self.fallback = RandomSearch()

  def propose(self, ctx: SearchContext, key: Array) -> list[Proposal]:
    rng = _numpy_rng(key)
    population = ctx.history.successful()[-self.population_size :]
    if not population:
      return self.fallback.propose(ctx, key)
    proposals = []
    for _ in range(8):  # a few children, in case some are rejected
      sample = rng.choice(
        len(population), min(self.tournament_size, len(population)), False
      )
      parent = max((population[i] for i in sample), key=lambda r: r.objective)
      child = ctx.space.mutate(ctx.space.decode(parent.tokens), rng)
      proposals.append(Proposal(tuple(int(v) for v in ctx.space.encode(child))))
    return proposals


# --- latent BO --------------------------------------------------------------------------


def _bucket(n: int, size: int = 16) -> int:
  return max(size, int(math.ceil(n / size)) * size)


class LatentBO:
  """GP + EIC in the autoencoder's latent space (module docstring)."""

  name = "latent_bo"

  def __init__(self, config: StrategySettings, autoencoder: TrainedAutoencoder):
    self.config = config
    self.ae = autoencoder
    self.fallback = RandomSearch()
    kernel = str(config.kernel)
    predict = autoencoder.predict_fn()

    def acq(z: Array, aux: dict[str, Any]) -> Array:
      mean, var = jax.vmap(lambda post: gp.predict(kernel, post, z[None]))(aux["posts"])
      mean, std = mean[:, 0], jnp.sqrt(var[:, 0])
      log_costs = predict(z)  # log params, log MACs
      log_pof = acquisition.log_probability_of_feasibility(
        log_costs, aux["cost_spread"], aux["log_budget"]
      )
      log_pof = jnp.where(aux["constrained"], log_pof, 0.0)
      per_sample = acquisition.log_eic(
        mean, std, aux["best"], log_pof[None, :], aux["feasible_observed"]
      )
      # Average the acquisition (not its log) over hyperparameter samples.
      return jax.nn.logsumexp(per_sample) - jnp.log(per_sample.shape[0])

    self._acquisition = acq
    # Posteriors for every hyperparameter sample, compiled once per padded size.
    # (One target vector per sample: the kriging believer's values differ by sample.)
    self._condition = jax.jit(
      jax.vmap(functools.partial(gp.condition, kernel), in_axes=(0, None, 0, None))
    )
    self._batch_acquisition = jax.jit(jax.vmap(acq, in_axes=(0, None)))
    self._encode_cache: dict[tuple[int, ...], np.ndarray] = {}

  def _latent(self, tokens: tuple[int, ...]) -> np.ndarray:
    if tokens not in self._encode_cache:
      self._encode_cache[tokens] = self.ae.encode(np.asarray([tokens]))[0]
    return self._encode_cache[tokens]

  def _log_budget(self, ctx: SearchContext) -> tuple[np.ndarray, np.ndarray]:
    """log-space budgets for (params, MACs) the predictor can speak to, and which apply.

    A model-size budget becomes a parameter budget at ``weight_bits`` bits per
    parameter (slightly optimistic: scales and BatchNorm take more; the exact check
    after decoding has the last word).
    """
    b = ctx.budget
    params = [v for v in (b.params,) if v is not None]
    if b.model_size_bits is not None:
      params.append(b.model_size_bits / ctx.weight_bits)
    log_budget = np.array(
      [math.log(min(params)) if params else 0.0, math.log(b.macs) if b.macs else 0.0]
    )
    return log_budget, np.array([bool(params), b.macs is not None])

  def propose(self, ctx: SearchContext, key: Array) -> list[Proposal]:
    ok = ctx.history.successful()
    if len(ok) < 2:
      return self.fallback.propose(ctx, key)
    x = np.stack([self._latent(r.tokens) for r in ok])
    y = np.array([r.objective for r in ok], dtype=np.float64)
    feasible = np.array([ctx.budget.fits(r.costs) for r in ok])
    xq = np.stack([self._latent(t) for t in ctx.pending]) if ctx.pending else x[:0]
    n, q = len(x), len(xq)
    m = _bucket(n + q)
    mask = np.r_[np.ones(n), np.zeros(m - n)].astype(np.float32)
    xp = np.concatenate([x, xq, np.zeros((m - n - q, x.shape[1]))]).astype(np.float32)
    ys, ymean, ystd = gp.standardize(
      jnp.asarray(np.r_[y, np.zeros(m - n)], jnp.float32), mask
    )
    fit_key, opt_key = jax.random.split(key)
    kernel = str(self.config.kernel)
    if self.config.hyperparameters == "nuts":
      samples = gp_numpyro.fit_nuts(
        kernel,
        jnp.asarray(xp),
        ys,
        fit_key,
        jnp.asarray(mask),
        num_warmup=int(self.config.nuts_warmup),
        num_samples=int(self.config.nuts_samples),
        num_kept=int(self.config.nuts_kept),
      )
    else:
      params = gp.fit_map(
        kernel,
        jnp.asarray(xp),
        ys,
        fit_key,
        jnp.asarray(mask),
        num_restarts=int(self.config.map_restarts),
        steps=int(self.config.map_steps),
      )
      samples = jax.tree.map(lambda v: v[None], params)
    num_samples = jax.tree.leaves(samples)[0].shape[0]
    posts = self._condition(
      samples, jnp.asarray(xp), jnp.broadcast_to(ys, (num_samples,) + ys.shape), mask
    )
    if q:
      posts = self._believe_pending(posts, samples, xp, ys, n, q)
    log_budget, constrained = self._log_budget(ctx)
    best_feasible = ys[:n][feasible].max() if feasible.any() else jnp.asarray(0.0)
    aux = {
      "posts": posts,
      "best": jnp.asarray(best_feasible, jnp.float32),
      "feasible_observed": jnp.asarray(bool(feasible.any())),
      "log_budget": jnp.asarray(log_budget, jnp.float32),
      "cost_spread": jnp.asarray(np.maximum(self.ae.predictor_rmse, 0.05), jnp.float32),
      "constrained": jnp.asarray(constrained),
    }
    top = np.argsort(-y)[: int(self.config.num_anchors)]
    points, _ = acquisition.optimize(
      self._acquisition,
      aux,
      opt_key,
      jnp.asarray(x[top], jnp.float32),
      dim=x.shape[1],
      num_raw=int(self.config.num_raw),
      num_starts=int(self.config.num_starts),
      steps=int(self.config.ascent_steps),
    )
    points = np.asarray(points)
    rng = _numpy_rng(opt_key)
    candidates = points
    for scale in (0.0, 0.1, 0.3, 1.0):  # widen the search until something is new
      if scale:
        noise = rng.standard_normal((8,) + points.shape).astype(np.float32)
        candidates = (points[None] + scale * noise).reshape(-1, points.shape[1])
      proposals = self._rank(ctx, candidates, aux)
      if proposals:
        return proposals
    return self.fallback.propose(ctx, key)

  def _believe_pending(self, posts, samples, xp, ys, n: int, q: int):
    """Kriging believer (Ginsbourger et al. 2010): the architectures being evaluated
    (rows n..n+q of ``xp``) join the data with the posterior mean as their value, under
    the same hyperparameters. Their predictive variance collapses, so the acquisition
    looks elsewhere, and the incumbent stays the best real observation."""
    kernel = str(self.config.kernel)
    xpj = jnp.asarray(xp)
    believed = jax.vmap(lambda post: gp.predict(kernel, post, xpj[n : n + q])[0])(posts)
    mask = jnp.asarray(np.r_[np.ones(n + q), np.zeros(len(xp) - n - q)], jnp.float32)
    # One believed target vector per hyperparameter sample.
    ys_believed = jnp.broadcast_to(ys, (believed.shape[0],) + ys.shape)
    ys_believed = ys_believed.at[:, n : n + q].set(believed)
    return self._condition(samples, xpj, ys_believed, mask)

  def _rank(self, ctx: SearchContext, points: np.ndarray, aux) -> list[Proposal]:
    """New architectures within the budget decoded from ``points``, best first by the
    acquisition at the code of the architecture each decodes to (the cost predictor and
    the GP are accurate on the codes of real architectures, not everywhere between
    them)."""
    decoded = self.ae.decode(points)
    projected = self.ae.encode(decoded)
    values = np.asarray(self._batch_acquisition(jnp.asarray(projected), aux))
    out, seen = [], set()
    for i in np.argsort(-values, kind="stable"):
      t = tuple(int(v) for v in decoded[i])
      if t in seen or ctx.is_taken(t):
        continue
      seen.add(t)
      # Exact costs are cheap: never spend a BO step on what the budget rules out.
      if ctx.budget.fits(ctx.costs(t)):
        out.append(Proposal(t, tuple(float(v) for v in points[i])))
        if len(out) == 16:
          break
    return out


def make_strategy(
  name: str, config: StrategySettings, autoencoder: TrainedAutoencoder | None = None
) -> Strategy:
  if name == "random":
    return RandomSearch(config.random_batch)
  if name == "evolution":
    return RegularizedEvolution(config.population_size, config.tournament_size)
  if name == "latent_bo":
    if autoencoder is None:
      raise ValueError("search.strategy latent_bo needs an autoencoder")
    return LatentBO(config, autoencoder)
  raise ValueError(f"search.strategy must be one of {list(STRATEGIES)}, got {name!r}")


__all__ = [
  "LatentBO",
  "Proposal",
  "RandomSearch",
  "RegularizedEvolution",
  "SearchContext",
  "Strategy",
  "StrategySettings",
  "make_strategy",
]
