"""The baselines: random search and regularized evolution; and the initial design's
given architectures (``GivenFirst``, ``given_tokens``)."""

from __future__ import annotations

import jax
import numpy as np

from nasq.costs import Budget, compute_costs
from nasq.feasibility import sample_within_budget
from nasq.spaces import MacroSpace, SearchSpace
from nasq.spaces.macro import REFERENCE_NETWORKS
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


# --- given architectures first ----------------------------------------------------------


def given_tokens(
  texts,
  space: SearchSpace,
  budget: Budget,
  weight_bits: int,
  activation_bits: int,
  num_initial: int,
  field: str = "initial_architectures",
) -> list[tuple[int, ...]]:
  """The token vectors of ``texts`` (each a ``REFERENCE_NETWORKS`` name or a string of
  ``space``), checked: in the space, within ``budget``, distinct, at most
  ``num_initial`` of them. Errors name ``field``, the entry and what is wrong."""
  texts = tuple(texts or ())
  if len(texts) > num_initial:
    raise ValueError(
      f"{field} holds {len(texts)} architectures; at most num_initial={num_initial}"
    )
  out: list[tuple[int, ...]] = []
  for i, text in enumerate(texts):
    where = f"{field}[{i}]={text!r}"
    arch_text = REFERENCE_NETWORKS[text][2] if text in REFERENCE_NETWORKS else text
    try:
      tokens = tuple(int(v) for v in space.encode(space.parse(arch_text)))
    except ValueError as e:
      raise ValueError(
        f"{where} is not an architecture of the search's space (accepted: one of "
        f"{sorted(REFERENCE_NETWORKS)} or a string such as 'conv3:s1:c16 maxpool:s2' "
        f"within space.*): {e}"
      ) from None
    over = budget.violations(
      compute_costs(space.decode(tokens), weight_bits, activation_bits).summary()
    )
    if over:
      raise ValueError(f"{where} exceeds the budget: {', '.join(over)}")
    if tokens in out:
      raise ValueError(f"{where} repeats entry {out.index(tokens)}")
    out.append(tokens)
  return out


class GivenFirst:
  """The given architectures (``given_tokens``), in order, each once (origin
  ``"given"``); then ``then``'s proposals. The search's initial design with
  ``initial_architectures``: a hand-written network and the random draws beside it."""

  def __init__(self, given: list[tuple[int, ...]], then):
    self.given, self.then = [tuple(t) for t in given], then
    self.name = then.name

  def propose(self, ctx: SearchContext, key: Array) -> list[Proposal]:
    for tokens in self.given:
      if not ctx.is_taken(tokens):
        return [Proposal(tokens, origin="given")]
    return self.then.propose(ctx, key)
