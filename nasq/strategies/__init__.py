"""Search strategies behind one interface, and the budget they all answer to.

A strategy proposes architectures, best first, given the history; it never trains or
costs anything itself. The search loop (``nasq.loop.run_strategy``) decodes each
proposal, computes its exact costs, and trains it only if it fits the ``Budget`` and was
not evaluated before; every strategy sees the same loop, so comparisons are fair.

* ``latent_bo``: every candidate comes from the latent space: codes drawn in a trust
  region around the best architectures' codes (adapting within the search) and from
  the prior, decoded, costed exactly and ranked by a GP's expected improvement
  (``LatentBO`` says what one step does).
* ``token_bo``: a GP on one-hot tokens ranks decoded codes and one-token neighbours of
  the best architectures (``TokenBO``; the search called latent BO before).
* ``lbq_nas``: the LBQ-NAS paper's method as published: a GP on the latent codes,
  expected improvement under the cost predictor's constraints maximized by gradient
  ascent over the latent box, the best codes decoded (``LBQNAS``).
* ``random``: uniform over the valid architectures that fit the budget (rejection;
  budget-pruned draws through the automaton where few architectures fit).
* ``evolution``: regularized evolution (Real et al. 2019): tournament selection in an
  aging population, one-token mutations.
"""

from __future__ import annotations

from nasq.autoencoder import TrainedAutoencoder
from nasq.costs import Budget
from nasq.strategies.base import (
  FEASIBILITY,
  HYPERPARAMETERS,
  INCUMBENTS,
  LATENT_STRATEGIES,
  STRATEGIES,
  Proposal,
  SearchContext,
  Strategy,
  StrategySettings,
)
from nasq.strategies.baselines import (
  GivenFirst,
  RandomSearch,
  RegularizedEvolution,
  given_tokens,
)
from nasq.strategies.latent_bo import LatentBO
from nasq.strategies.lbq_nas import LBQNAS
from nasq.strategies.token_bo import TokenBO
from nasq.strategies.trust_region import TrustRegion, trust_region_from_history


def make_strategy(
  name: str, config: StrategySettings, autoencoder: TrainedAutoencoder | None = None
) -> Strategy:
  if name == "random":
    return RandomSearch(config.random_batch)
  if name == "evolution":
    return RegularizedEvolution(config.population_size, config.tournament_size)
  if name in LATENT_STRATEGIES:
    if autoencoder is None:
      raise ValueError(f"search.strategy {name} needs an autoencoder")
    cls = {"latent_bo": LatentBO, "token_bo": TokenBO, "lbq_nas": LBQNAS}[name]
    return cls(config, autoencoder)
  raise ValueError(f"search.strategy must be one of {list(STRATEGIES)}, got {name!r}")


__all__ = [
  "Budget",
  "FEASIBILITY",
  "GivenFirst",
  "HYPERPARAMETERS",
  "INCUMBENTS",
  "LATENT_STRATEGIES",
  "LBQNAS",
  "STRATEGIES",
  "LatentBO",
  "Proposal",
  "RandomSearch",
  "RegularizedEvolution",
  "SearchContext",
  "Strategy",
  "StrategySettings",
  "TokenBO",
  "TrustRegion",
  "given_tokens",
  "trust_region_from_history",
  "make_strategy",
]
