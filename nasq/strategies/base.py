"""What every strategy shares: its settings, its proposals, the context it reads."""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import jax
import numpy as np

from nasq import gp
from nasq.autoencoder import TrainedAutoencoder
from nasq.costs import Budget, compute_costs
from nasq.history import History
from nasq.spaces import SearchSpace

Array = jax.Array

STRATEGIES = ("latent_bo", "token_bo", "lbq_nas", "random", "evolution")
# The strategies that draw from an autoencoder's latent space (and need one trained).
LATENT_STRATEGIES = ("latent_bo", "token_bo", "lbq_nas")
HYPERPARAMETERS = ("map", "nuts")
INCUMBENTS = ("posterior_mean", "observed")
FEASIBILITY = ("exact", "pof")
OUTPUT_TRANSFORMS = ("copula", "none")
GP_INPUTS = ("latent", "tokens", "both")


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
  refit_every: int = 5  # Full MAP fit every this many data points; warm starts between.
  warm_steps: int = 50  # Adam steps from the last full fit.
  pool_size: int = 512  # Codes decoded and ranked per step.
  num_anchors: int = 5  # Best feasible points whose trust regions the pool samples.
  # One-token mutations of each anchor added to the pool (None: the strategy's own,
  # latent_bo 0, token_bo 32).
  num_neighbours: int | None = None
  latent_bound: float = 4.0  # Codes live in [-bound, bound]^d (normalized to [0, 1]).
  trust_region: bool = True  # False: the pool spans the whole box (ablation).
  tr_initial: float = 0.8  # Trust-region side, unit-cube units (TuRBO's defaults).
  tr_minimum: float = 0.5**7
  tr_maximum: float = 1.6
  tr_success_tol: int = 3
  # Failures in a row that halve the trust region; 0: max(4, latent dimension) (TuRBO's
  # rule, which never shrinks it in a search of fewer proposals than that); None: the
  # strategy's own (latent_bo 4, so the region adapts within tens of proposals;
  # token_bo 0).
  tr_failure_tol: int | None = None
  incumbent: str = "posterior_mean"  # or "observed" (best noisy value; ablation).
  feasibility: str = "exact"  # or "pof": also rank by predicted feasibility (ablation).
  # What the GP models: "copula" (objectives' ranks mapped to normal quantiles, robust
  # to the few collapsed networks that squash a standardized scale) or "none".
  output_transform: str = "copula"
  # What the GP's kernel sees: "latent" (the unit-cube codes of the architectures),
  # "tokens" (their one-hot tokens) or "both" (the two side by side, one ARD kernel
  # over the concatenation); None: the strategy's own ("tokens" for both latent_bo and
  # token_bo: measured better than codes on AnalogNAS-Bench). The pool and trust region
  # stay in the latent space either way.
  gp_input: str | None = None
  # Weighted retraining (latent_bo): every this many successful evaluations the
  # autoencoder is trained ``retrain_steps`` more steps on batches half from the space,
  # half from the evaluated architectures weighted by rank (Tripp et al. 2020's
  # 1 / (k N + rank), k = ``retrain_k``); 0 = never (the autoencoder stays as trained).
  retrain_every: int = 0
  retrain_steps: int = 200
  retrain_k: float = 0.01

  def __post_init__(self):
    gp.check_kernel(self.kernel)
    if self.hyperparameters not in HYPERPARAMETERS:
      raise ValueError(
        f"strategies.hyperparameters must be one of {list(HYPERPARAMETERS)}, got "
        f"{self.hyperparameters!r}"
      )
    for name, value, allowed in (
      ("incumbent", self.incumbent, INCUMBENTS),
      ("feasibility", self.feasibility, FEASIBILITY),
      ("output_transform", self.output_transform, OUTPUT_TRANSFORMS),
      ("gp_input", self.gp_input, GP_INPUTS + (None,)),
    ):
      if value not in allowed:
        raise ValueError(
          f"strategies.{name} must be one of {list(allowed)}, got {value!r}"
        )
    if self.tr_failure_tol is not None and int(self.tr_failure_tol) < 0:
      raise ValueError(
        f"strategies.tr_failure_tol must be >= 0 or None, got {self.tr_failure_tol}"
      )
    if self.num_neighbours is not None and int(self.num_neighbours) < 0:
      raise ValueError(
        f"strategies.num_neighbours must be >= 0, got {self.num_neighbours}"
      )
    if int(self.retrain_every) < 0:
      raise ValueError(
        f"strategies.retrain_every must be >= 0 (0: never), got {self.retrain_every}"
      )
    if not self.retrain_k > 0:
      raise ValueError(f"strategies.retrain_k must be > 0, got {self.retrain_k}")
    for name in (
      "refit_every",
      "retrain_steps",
      "pool_size",
      "num_anchors",
      "tr_success_tol",
    ):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"strategies.{name} must be >= 1, got {getattr(self, name)}")
    if not 0 < self.tr_minimum <= self.tr_initial <= self.tr_maximum:
      raise ValueError(
        "strategies.tr_minimum <= tr_initial <= tr_maximum must hold and be > 0, got "
        f"{self.tr_minimum}, {self.tr_initial}, {self.tr_maximum}"
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
  # Drawn by the strategy's random fallback, not its model: recorded as "<name>/random".
  fallback: bool = False
  # Where within the strategy it came from (the record's ``origin``): "random",
  # "mutation" (evolution), "latent_region", "prior" or "neighbour" (latent BO).
  origin: str = ""


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
  # Memo of exact costs by tokens; contexts of one space and bit widths may share one.
  cost_cache: dict[tuple[int, ...], dict[str, float]] = dataclasses.field(
    default_factory=dict, repr=False
  )

  def is_taken(self, tokens: tuple[int, ...]) -> bool:
    """Evaluated already, or being evaluated."""
    return self.history.evaluated_index(tokens) is not None or tokens in self.pending

  def costs(self, tokens: tuple[int, ...]) -> dict[str, float]:
    """Exact costs of ``tokens``, remembered (strategies cost the same candidates
    again and again)."""
    if tokens not in self.cost_cache:
      arch = self.space.decode(tokens)
      summary = compute_costs(arch, self.weight_bits, self.activation_bits).summary()
      self.cost_cache[tokens] = summary
    return dict(self.cost_cache[tokens])


@runtime_checkable
class Strategy(Protocol):
  """Proposes architectures to evaluate, best first; never trains or costs them."""

  name: str

  def propose(self, ctx: SearchContext, key: Array) -> list[Proposal]: ...


def numpy_rng(key: Array) -> np.random.Generator:
  """A NumPy generator seeded by a JAX key, for host-side sampling and mutation."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())


def as_fallback(proposals: list[Proposal]) -> list[Proposal]:
  return [dataclasses.replace(p, fallback=True) for p in proposals]
