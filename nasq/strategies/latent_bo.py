"""Bayesian optimization over candidates from the autoencoder's latent space
(``LatentBO``): codes drawn in an adaptive latent trust region and the prior, decoded,
ranked by a GP; exact feasibility. The machinery ``token_bo`` and ``lbq_nas`` build
on."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
import scipy.stats

from nasq import acquisition, gp
from nasq.autoencoder import FineTuner, TrainedAutoencoder, rank_weights
from nasq.costs import Budget
from nasq.spaces import one_hot
from nasq.strategies.base import (
  Proposal,
  SearchContext,
  StrategySettings,
  as_fallback,
  numpy_rng,
)
from nasq.strategies.baselines import RandomSearch
from nasq.strategies.trust_region import trust_region_from_history

Array = jax.Array

_CHUNK = 256  # candidates per acquisition call


def _padded(u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, Array, np.ndarray]:
  """(inputs, standardized targets, mask), zero-padded to ``_bucket(len(u))`` rows so
  data sizes share compiled programs."""
  n = len(u)
  m = _bucket(n)
  mask = np.r_[np.ones(n), np.zeros(m - n)].astype(np.float32)
  xp = np.concatenate([u, np.zeros((m - n, u.shape[1]), np.float32)])
  ys, _, _ = gp.standardize(jnp.asarray(np.r_[y, np.zeros(m - n)], jnp.float32), mask)
  return xp, ys, mask


def _standardized(y: np.ndarray) -> np.ndarray:
  """``y`` standardized as the GP sees it: the same padding and operations as
  ``_padded`` (so the same values, and one compiled program per bucket of sizes)."""
  n = len(y)
  mask = np.r_[np.ones(n), np.zeros(_bucket(n) - n)].astype(np.float32)
  padded = jnp.asarray(np.r_[y, np.zeros(len(mask) - n)], jnp.float32)
  return np.asarray(gp.standardize(padded, jnp.asarray(mask))[0])[:n]


def output_transform(y: np.ndarray, kind: str) -> np.ndarray:
  """The values the GP models: with "copula", each objective's rank among ``y`` mapped
  to a standard normal quantile (Salinas et al. 2020; ties share their mean rank), so a
  handful of collapsed networks (10% accuracy) cannot squash the differences among the
  good ones into a sliver of the standardized scale; monotone, so the best stays the
  best. "none" returns ``y`` unchanged."""
  y = np.asarray(y, np.float64)
  if kind == "none" or len(y) == 0:
    return y
  ranks = scipy.stats.rankdata(y)
  return scipy.special.ndtri(ranks / (len(y) + 1))


def log_budget(ctx: SearchContext) -> np.ndarray:
  """The budget in the cost predictor's units: (log parameters, log MACs); a bound the
  budget does not set is 1e9 (no constraint). A model-size bound becomes a parameter
  bound at the search's weight bits."""
  b = ctx.budget
  params = [v for v in (b.params,) if v is not None]
  if b.model_size_bits is not None:
    params.append(b.model_size_bits / ctx.weight_bits)
  return np.array(
    [math.log(min(params)) if params else 1e9, math.log(b.macs) if b.macs else 1e9],
    np.float32,
  )


def _bucket(n: int, size: int = 32) -> int:
  return max(size, int(math.ceil(n / size)) * size)


class LatentBO:
  """Bayesian optimization over candidates that all come from the autoencoder's latent
  space: codes drawn in a trust region that adapts within the search's budget, and
  from the prior, decoded, costed exactly and ranked by a GP; no token neighbours.

  One step, as the defaults run it:

  1. Fewer than two successful evaluations: a random feasible architecture (recorded
     as the fallback, ``latent_bo/random``).
  2. A GP (``kernel``, ARD) is fitted to the evaluated architectures and their
     objectives' copula transform; MAP hyperparameters, a full fit every
     ``refit_every`` points and ``warm_steps`` from it in between. Its inputs
     (``gp_input``): the one-hot tokens by default; "latent" (the encoder's codes in
     the unit cube) and "both" (codes beside tokens) are the measured alternatives
     (experiments/benchmarks/README.md: on AnalogNAS-Bench's 8-dimensional codes both
     ranked worse than tokens).
  3. The incumbent is the best posterior mean among the feasible evaluated
     architectures; the ``num_anchors`` best by that score are the anchors.
  4. Candidates: ``pool_size`` codes, seven in eight drawn uniformly in a box around
     the anchors' codes (half around the best) of side ``length`` (unit-cube units;
     scaled per dimension by the GP's length scales as in TuRBO where the GP sees
     codes), at most 20 coordinates moved per code; one in eight from the latent
     prior. Every code is decoded. (``num_neighbours`` one-token mutations of each
     anchor join them when set: ``token_bo``'s pool; none here.)
  5. Every candidate is deduplicated, costed exactly, and dropped if evaluated,
     pending, or over the budget (a hard mask).
  6. The rest are ranked by log expected improvement over the incumbent, the GP
     evaluated at the architecture each decodes to (its tokens, or its own code: the
     GP models real architectures, not the space between them); the 16 best are
     returned.
  7. Nothing new and feasible: the box is widened 2x, then 4x, then the random
     fallback.

  With ``retrain_every`` = r > 0 (weighted retraining, Tripp et al. 2020; off by
  default), steps 4-6 encode and decode with the autoencoder retrained after every r
  successful evaluations (``_autoencoder_for``: ``retrain_steps`` steps from the trained
  weights, half of each batch from the evaluated architectures weighted by rank); the
  ``feasibility='pof'`` ablation keeps the trained cost predictor.

  The box follows TuRBO's rules (``trust_region_from_history``), replayed from the
  history: doubled after ``tr_success_tol`` improvements in a row, halved after
  ``tr_failure_tol`` failures in a row (4 here, so it adapts within a search of tens of
  proposals; TuRBO's max(4, dimension) would never shrink in one), restarted at
  ``tr_initial`` below ``tr_minimum``. Each record's ``origin`` says which part of the
  pool a proposal came from (``latent_region``, ``prior``; ``neighbour`` where
  neighbours are on; ``random`` for the fallback) and its ``latent`` field the code;
  ``report.md`` and the strategy comparisons count each origin's share of proposals
  and of improvements. Every fit is a function of the data alone, so a resumed search
  proposes what an uninterrupted one would.
  """

  # This strategy's values of the settings left at None (``StrategySettings``).
  DEFAULTS = {"gp_input": "tokens", "num_neighbours": 0, "tr_failure_tol": 4}
  name = "latent_bo"

  def __init__(self, config: StrategySettings, autoencoder: TrainedAutoencoder):
    self.config = dataclasses.replace(
      config,
      **{k: v for k, v in self.DEFAULTS.items() if getattr(config, k) is None},
    )
    self.ae = self.trained = autoencoder
    # Weighted retraining: the fine-tuner (made on first use) and the last retrained
    # autoencoder, by the data it was retrained on.
    self._tuner: FineTuner | None = None
    self._retrained: tuple[bytes, TrainedAutoencoder] | None = None
    self.fallback = RandomSearch()
    self.kernel = str(config.kernel)
    self.bound = float(config.latent_bound)
    self._encode_cache: dict[tuple[int, ...], np.ndarray] = {}
    # The last full fit, by the data it was fitted to (one strategy may serve many
    # searches, as in the benchmarks).
    self._full_fits: dict[bytes, gp.GPParams] = {}
    self._predict_costs = autoencoder.predict_fn()
    self._log_pof = jax.jit(
      jax.vmap(
        lambda z, spread, budget: jnp.sum(
          acquisition.log_probability_of_feasibility(
            self._predict_costs(z), spread, budget
          )
        ),
        in_axes=(0, None, None),
      )
    )

  def _latent(self, tokens: tuple[int, ...]) -> np.ndarray:
    return self._latents([tokens])[0]

  def _latents(self, tokens: list[tuple[int, ...]]) -> np.ndarray:
    """Codes of ``tokens`` [n, d], encoding the ones not seen before in one batch."""
    new = list(dict.fromkeys(t for t in tokens if t not in self._encode_cache))
    if new:
      for t, z in zip(new, self.ae.encode(np.asarray(new)), strict=True):
        self._encode_cache[t] = z
    return np.stack([self._encode_cache[t] for t in tokens])

  def _unit(self, z: np.ndarray) -> np.ndarray:
    return ((np.asarray(z) + self.bound) / (2 * self.bound)).astype(np.float32)

  def _features(self, ctx: SearchContext, tokens: list[tuple[int, ...]]) -> np.ndarray:
    """The GP's inputs for ``tokens`` [n, f]: unit-cube codes ("latent"), one one-hot
    block per token position ("tokens"), or the codes then the one-hot blocks
    ("both"), as ``gp_input`` says."""
    kind = self.config.gp_input
    parts = []
    if kind in ("latent", "both"):
      parts.append(self._unit(self._latents(tokens)))
    if kind in ("tokens", "both"):
      parts.append(one_hot(tokens, ctx.space.vocab_sizes).astype(np.float32))
    return np.concatenate(parts, axis=1)

  def _fit(self, u: np.ndarray, objectives: np.ndarray) -> acquisition.Fit:
    """The GP on the inputs ``u`` from ``_features`` (unit-cube codes, or one-hot
    tokens when ``gp_input == "tokens"``; padded to a bucket, so sizes share compiled
    programs) and the transformed ``objectives``, hyperparameters as in the class
    docstring. The full fit sees the transform of its own data alone, so it stays the
    same fit (and cached) until the next ``refit_every`` boundary, although a rank
    transform of all the data moves with every new point."""
    c = self.config
    n = len(u)
    y = output_transform(objectives, c.output_transform)
    xp, ys, mask = _padded(u, y)
    if c.hyperparameters == "nuts":
      return acquisition.fit_posteriors(
        self.kernel,
        xp,
        ys,
        jax.random.key(n),
        mask,
        method="nuts",
        nuts_warmup=int(c.nuts_warmup),
        nuts_samples=int(c.nuts_samples),
        nuts_kept=int(c.nuts_kept),
      )
    anchor = n - n % int(c.refit_every)
    if anchor < 2:
      anchor = n
    data = u[:anchor].tobytes() + np.asarray(objectives[:anchor], np.float64).tobytes()
    if data not in self._full_fits:
      self._full_fits = {
        data: self._fit_full(
          u[:anchor], output_transform(objectives[:anchor], c.output_transform)
        )
      }
    init = self._full_fits[data]
    if anchor == n:
      samples = jax.tree.map(lambda v: v[None], init)
      return acquisition.Fit(
        samples, acquisition.condition_samples(self.kernel, samples, xp, ys, mask)
      )
    return acquisition.fit_posteriors(
      self.kernel,
      xp,
      ys,
      jax.random.key(n),
      mask,
      init=init,
      map_restarts=1,
      map_steps=int(c.warm_steps),
    )

  def _fit_full(self, u: np.ndarray, y: np.ndarray) -> gp.GPParams:
    c = self.config
    n = len(u)
    xp, ys, mask = _padded(u, y)
    return gp.fit_map(
      self.kernel,
      jnp.asarray(xp),
      ys,
      jax.random.key(n),
      jnp.asarray(mask),
      num_restarts=int(c.map_restarts),
      steps=int(c.map_steps),
    )

  def _autoencoder_for(self, ok: list, budget: Budget) -> TrainedAutoencoder:
    """The autoencoder a step with the successful records ``ok`` uses: the trained one,
    or, with ``retrain_every`` = r > 0, the trained one retrained on the first
    r * floor(len(ok) / r) records (always from the trained weights, so a resumed
    search retrains to the same weights). Their weights rank the objectives among the
    feasible records; the infeasible rank last."""
    every = int(self.config.retrain_every)
    if every <= 0 or len(ok) < every:
      return self.trained
    data = ok[: len(ok) - len(ok) % every]
    tokens = np.asarray([r.tokens for r in data], np.int32)
    values = np.array(
      [r.objective if budget.fits(r.costs) else -np.inf for r in data], np.float64
    )
    key = tokens.tobytes() + values.tobytes()
    if self._retrained is None or self._retrained[0] != key:
      if self._tuner is None:
        self._tuner = FineTuner(self.trained, steps=int(self.config.retrain_steps))
      weights = rank_weights(values, float(self.config.retrain_k))
      self._retrained = (key, self._tuner(tokens, weights, seed=len(data)))
    return self._retrained[1]

  def _use(self, ae: TrainedAutoencoder) -> None:
    """Encode and decode with ``ae`` from now on (codes cached under another are
    dropped)."""
    if ae is not self.ae:
      self.ae = ae
      self._encode_cache = {}

  def propose(self, ctx: SearchContext, key: Array) -> list[Proposal]:
    ok = ctx.history.successful()
    self._use(self._autoencoder_for(ok, ctx.budget))
    if len(ok) < 2:
      return as_fallback(self.fallback.propose(ctx, key))
    c = self.config
    u = self._features(ctx, [r.tokens for r in ok])
    objectives = np.array([r.objective for r in ok], dtype=np.float64)
    y = output_transform(objectives, c.output_transform)
    feasible = np.array([ctx.budget.fits(r.costs) for r in ok])
    fit = self._fit(u, objectives)
    posts = self._with_pending(fit, ctx, u, y)
    incumbent, anchors = self._incumbent(fit.posts, u, y, feasible)
    aux = {
      "objective": posts,
      "best": jnp.asarray(incumbent, jnp.float32),
      "feasible_observed": jnp.asarray(bool(feasible.any())),
      "constraints": [],
      "limits": [],
    }
    if c.gp_input in ("latent", "both"):  # the codes come first in the inputs
      d = self.ae.latent_dim
      centres = u[anchors, :d]
      lengthscale = np.exp(np.asarray(fit.samples.log_lengthscale).mean(0))[:d]
    else:  # the GP's length scales are per token, not per latent coordinate
      centres = self._unit(self._latents([ok[i].tokens for i in anchors]))
      lengthscale = np.ones(centres.shape[1])
    tr = trust_region_from_history(
      ctx.history, ctx.budget, self.name, c, centres.shape[1]
    )
    rng = numpy_rng(key)
    for widen in (1.0, 2.0, 4.0):  # widen the region until something new fits
      pool, origins = self._pool(centres, lengthscale, tr.length * widen, rng)
      extra = self._neighbours(ctx, [ok[i].tokens for i in anchors], rng)
      proposals = self._rank(ctx, pool, aux, extra, origins + ["neighbour"] * len(extra))
      if proposals:
        return proposals
    return as_fallback(self.fallback.propose(ctx, key))

  def _with_pending(self, fit, ctx: SearchContext, u, y) -> gp.Posterior:
    """Kriging believer (Ginsbourger et al. 2010): the architectures being evaluated
    join the data with the posterior mean as their value, under the same
    hyperparameters. Their predictive variance collapses, so the acquisition looks
    elsewhere, and the incumbent stays computed from real observations."""
    if not ctx.pending:
      return fit.posts
    uq = self._features(ctx, list(ctx.pending))
    n, q = len(u), len(uq)
    m = _bucket(n + q)
    xp = np.concatenate([u, uq, np.zeros((m - n - q, u.shape[1]), np.float32)])
    mean, _ = acquisition.predict_samples(self.kernel, fit.posts, uq)
    # The real rows' standardized targets, then one believed vector per sample.
    yn = _standardized(y)
    ys = np.zeros((mean.shape[0], m), np.float32)
    ys[:, :n] = yn
    ys[:, n : n + q] = np.asarray(mean)
    mask = np.r_[np.ones(n + q), np.zeros(m - n - q)].astype(np.float32)
    return acquisition.condition_samples(
      self.kernel, fit.samples, jnp.asarray(xp), jnp.asarray(ys), jnp.asarray(mask)
    )

  def _incumbent(self, posts, u, y, feasible) -> tuple[float, np.ndarray]:
    """(the incumbent for EI, indices of the trust-region anchors). Noise-aware: the
    best posterior mean over the feasible evaluated points (else the best standardized
    observation); anchors are the ``num_anchors`` best feasible points by that score."""
    c = self.config
    if c.incumbent == "posterior_mean":
      mean, _ = acquisition.predict_samples(self.kernel, posts, u)
      score = np.asarray(mean).mean(0)
    else:
      score = _standardized(y)
    order = [i for i in np.argsort(-score, kind="stable") if feasible[i]]
    if not order:  # nothing feasible yet: anchor at the best observations
      order = list(np.argsort(-score, kind="stable"))
    best = float(score[order[0]]) if feasible.any() else 0.0
    return best, np.asarray(order[: int(c.num_anchors)])

  def _pool(self, centres, lengthscale, length, rng) -> tuple[np.ndarray, list[str]]:
    """Codes to decode: uniform in the trust-region box around each centre (the first,
    the incumbent, gets half the pool; sides scaled by the GP's length scales as in
    TuRBO; at most ~20 coordinates moved per point in high dimensions), plus one in
    eight from the latent prior. Returned in latent units, with each row's origin
    ("latent_region" or "prior")."""
    c = self.config
    n, d = int(c.pool_size), centres.shape[1]
    weights = lengthscale / np.exp(np.mean(np.log(lengthscale)))
    half = 0.5 * length * weights
    if not c.trust_region:
      half = np.full(d, 0.5)
    num_prior = n // 8
    num_local = n - num_prior
    share = [num_local // 2] + [
      (num_local - num_local // 2) // max(1, len(centres) - 1)
    ] * (len(centres) - 1)
    if len(centres) == 1:
      share = [num_local]
    points = []
    for centre, k in zip(centres, share, strict=True):
      lo, hi = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
      cand = lo + (hi - lo) * rng.random((k, d))
      move = rng.random((k, d)) < min(1.0, 20.0 / d)
      move[np.arange(k), rng.integers(0, d, k)] = True
      points.append(np.where(move, cand, centre))
    unit = np.concatenate(points) if points else np.zeros((0, d))
    z = unit * 2 * self.bound - self.bound
    prior = rng.standard_normal((num_prior, d))
    origins = ["latent_region"] * len(z) + ["prior"] * num_prior
    return np.concatenate([z, prior]).astype(np.float32), origins

  def _neighbours(
    self, ctx: SearchContext, anchors: list[tuple[int, ...]], rng: np.random.Generator
  ) -> list[tuple[int, ...]]:
    """``num_neighbours`` one-token mutations (``space.mutate``) of each anchor: the
    architectures next to the best ones, which a decoded code can miss when the latent
    space folds."""
    out = []
    for tokens in anchors:
      arch = ctx.space.decode(tokens)
      for _ in range(int(self.config.num_neighbours)):
        out.append(tuple(int(v) for v in ctx.space.encode(ctx.space.mutate(arch, rng))))
    return out

  def _rank(
    self,
    ctx: SearchContext,
    points: np.ndarray,
    aux,
    extra: list[tuple[int, ...]],
    origins: list[str],
  ) -> list[Proposal]:
    """New architectures within the budget decoded from ``points``, then ``extra``
    (token neighbours), best first by the acquisition at the code of the architecture
    each decodes to (the GP models real architectures' codes, not the space between
    them). Exact costs are the only feasibility test; with ``feasibility='pof'``
    (ablation) the rank also multiplies in the autoencoder cost predictor's probability
    of feasibility. ``origins[i]`` names where row i of ``points + extra`` came from; an
    architecture reached several ways keeps its first (a decoded code before a
    neighbour)."""
    decoded = (
      [tuple(int(v) for v in row) for row in self.ae.decode(points)]
      if len(points)
      else []
    )
    keep, tokens = [], []
    seen: set[tuple[int, ...]] = set()
    for i, t in enumerate(decoded + list(extra)):
      if t in seen or ctx.is_taken(t):
        continue
      seen.add(t)
      if ctx.budget.fits(ctx.costs(t)):
        keep.append(i)
        tokens.append(t)
    if not tokens:
      return []
    inputs = self._features(ctx, tokens)
    m = _bucket(len(inputs), _CHUNK)
    padded = np.concatenate([inputs, np.zeros((m - len(inputs), inputs.shape[1]))])
    values = np.concatenate(
      [  # fixed-size chunks: one compiled program per GP size
        np.asarray(
          acquisition.batch_log_eic(
            self.kernel, jnp.asarray(padded[i : i + _CHUNK], jnp.float32), aux
          )
        )
        for i in range(0, m, _CHUNK)
      ]
    )[: len(inputs)]
    if self.config.feasibility == "pof":
      values = values + self._pof(ctx, self._latents(tokens))
    order = np.argsort(-values, kind="stable")[:16]
    latents = np.concatenate([points, self._latents(list(extra))]) if extra else points
    return [
      Proposal(
        tokens[i], tuple(float(v) for v in latents[keep[i]]), origin=origins[keep[i]]
      )
      for i in order
    ]

  def _predictor_spread(self) -> np.ndarray:
    """The cost predictor's spread per target: its held-out RMSE, at least 0.05."""
    return np.maximum(self.ae.predictor_rmse, 0.05).astype(np.float32)

  def _pof(self, ctx: SearchContext, codes: np.ndarray) -> np.ndarray:
    """log PoF of (params, MACs) budgets from the autoencoder's cost predictor, its
    held-out RMSE as the spread (the ranking before exact masking; for ablations)."""
    m = _bucket(len(codes), _CHUNK)
    padded = np.concatenate([codes, np.zeros((m - len(codes), codes.shape[1]))])
    values = self._log_pof(
      jnp.asarray(padded, jnp.float32), self._predictor_spread(), log_budget(ctx)
    )
    return np.asarray(values)[: len(codes)]
