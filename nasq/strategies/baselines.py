"""The baselines: random search and regularized evolution."""

from __future__ import annotations

import jax
import numpy as np

from nasq.feasibility import sample_within_budget
from nasq.spaces import MacroSpace
from nasq.strategies.base import Proposal, SearchContext, as_fallback, numpy_rng

Array = jax.Array


# --- random -----------------------------------------------------------------------------


class RandomSearch:
  """Uniform over the valid architectures that fit the budget, by rejection sampling.
  Where the budget admits so few architectures that ``max_draws`` draws find too few
  (fewer than about 1 in 20,000 fit), the rest are drawn through the macro space's
  automaton with every option pruned that cannot be completed within the bounds
  (``feasibility.sample_within_budget``: near-uniform, found in milliseconds)."""

  name = "random"

  def __init__(self, batch: int = 256):
    self.batch = int(batch)

  def sample_feasible(
    self, ctx: SearchContext, rng: np.random.Generator, n: int, max_draws: int = 20_000
  ) -> list[tuple[int, ...]]:
    """``n`` distinct unevaluated feasible token vectors (fewer if none can be found)."""
    out: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()

    def take(candidates) -> None:
      for t in candidates:
        t = tuple(int(v) for v in t)
        if len(out) == n or t in seen or ctx.is_taken(t):
          continue
        seen.add(t)
        if ctx.budget.fits(ctx.costs(t)):
          out.append(t)

    draws = 0
    while len(out) < n and draws < max_draws:
      take(ctx.space.sample_tokens(rng, self.batch))
      draws += self.batch
    if len(out) < n and isinstance(ctx.space, MacroSpace):
      for _ in range(10):
        take(
          sample_within_budget(
            ctx.space, ctx.budget, ctx.weight_bits, ctx.activation_bits, rng, 4 * n
          )
        )
        if len(out) == n:
          break
    return out

  def propose(self, ctx: SearchContext, key: Array) -> list[Proposal]:
    rng = numpy_rng(key)
    return [Proposal(t, origin="random") for t in self.sample_feasible(ctx, rng, 1)]


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
    rng = numpy_rng(key)
    population = ctx.history.successful()[-self.population_size :]
    if not population:
      return as_fallback(self.fallback.propose(ctx, key))
    proposals = []
    for _ in range(8):  # a few children, in case some are rejected
      sample = rng.choice(
        len(population), min(self.tournament_size, len(population)), False
      )
      parent = max((population[i] for i in sample), key=lambda r: r.objective)
      child = ctx.space.mutate(ctx.space.decode(parent.tokens), rng)
      proposals.append(
        Proposal(tuple(int(v) for v in ctx.space.encode(child)), origin="mutation")
      )
    return proposals
