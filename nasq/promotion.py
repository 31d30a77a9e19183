"""Successive halving after the search: the best candidates trained longer, rung by rung.

The search trains every candidate at its cheap fidelity (``train``, ``data``: rung 0).
With rungs configured (``promotion.rungs="3x12000,1x50000"``: epochs x training images,
0 images = the whole training split), the best ``keep`` fraction of rung ``k - 1``'s
successful candidates (at least ``min_keep``, ranked by their rung ``k - 1`` objective)
is trained again at rung ``k``'s fidelity, every strategy alike. Each (architecture,
rung) evaluation is one history record with ``fidelity=k`` and source ``promotion``; a
failed one is recorded and not promoted further. The retraining then takes the best
candidates of the highest rung first (``ranked_for_retraining``).

Resumable mid-rung: the candidates of rung ``k`` follow from rung ``k - 1``'s records
alone, and those already evaluated at rung ``k`` are not trained again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable

from nasq.costs import Budget
from nasq.evaluators import Objective
from nasq.executors import Executor
from nasq.history import History, Record
from nasq.spaces import SearchSpace

SOURCE = "promotion"


@dataclasses.dataclass(frozen=True)
class Rung:
  epochs: int
  train_images: int  # 0: the whole training split

  def __str__(self) -> str:
    return f"{self.epochs}x{self.train_images}"


@dataclasses.dataclass(frozen=True)
class PromotionConfig:
  """Successive halving after the search (the ``promotion`` section)."""

  # Rungs after the search's own fidelity, cheapest first: "<epochs>x<training
  # images>" separated by commas (0 images: all of them); "" = no promotion.
  rungs: str = ""
  keep: float = 1 / 3  # Fraction of a rung's successful candidates promoted.
  min_keep: int = 2  # Promote at least this many (if the rung has them).

  def __post_init__(self):
    parse_rungs(self.rungs)
    if not 0 < self.keep <= 1:
      raise ValueError(f"promotion.keep must be in (0, 1], got {self.keep!r}")
    if self.min_keep < 1:
      raise ValueError(f"promotion.min_keep must be >= 1, got {self.min_keep!r}")

  @property
  def parsed(self) -> tuple[Rung, ...]:
    return parse_rungs(self.rungs)


def parse_rungs(text: str) -> tuple[Rung, ...]:
  """``"3x12000,1x0"`` -> (Rung(3, 12000), Rung(1, 0)); errors name the field."""
  rungs = []
  for part in (p.strip() for p in text.split(",") if p.strip()):
    try:
      epochs, images = (int(v) for v in part.split("x"))
    except ValueError:
      epochs = images = -1
    if epochs < 1 or images < 0:
      raise ValueError(
        f"promotion.rungs must be comma-separated '<epochs>x<training images>' with "
        f"epochs >= 1 and images >= 0 (0: all), e.g. '3x12000,1x0'; got {text!r}"
      )
    rungs.append(Rung(epochs, images))
  return tuple(rungs)


def candidates(history: History, rung: int, config: PromotionConfig) -> list[Record]:
  """The rung ``rung - 1`` records promoted to ``rung``, best first."""
  ok = sorted(history.successful(rung - 1), key=lambda r: -r.objective)
  n = min(len(ok), max(config.min_keep, math.ceil(config.keep * len(ok))))
  return ok[:n]


def run_promotions(
  history: History,
  space: SearchSpace,
  config: PromotionConfig,
  objective: Objective,
  make_executor: Callable[[Rung], Executor],
  on_record: Callable[[Record], None] | None = None,
) -> None:
  """Runs every rung in order (see the module docstring)."""
  for k, rung in enumerate(config.parsed, start=1):
    done = {r.tokens for r in history.evaluated(k)}
    todo = [r for r in candidates(history, k, config) if r.tokens not in done]
    if not todo:
      continue
    executor = make_executor(rung)
    try:
      pending: dict[Hashable, Record] = {}
      queue = list(todo)
      while queue or pending:
        while queue and len(pending) < executor.num_workers:
          r = queue.pop(0)
          pending[executor.submit(space.decode(r.tokens), r.seed)] = r
        for handle, result in executor.wait_any(list(pending)):
          parent = pending.pop(handle)
          status, value, reason = objective.judge(result, parent.costs)
          record = history.append(
            Record(
              index=history.next_index,
              status=status,
              source=SOURCE,
              arch=parent.arch,
              tokens=parent.tokens,
              costs=parent.costs,
              objective=value,
              metrics=result.metrics,
              latent=parent.latent,
              seed=parent.seed,
              seconds=result.seconds,
              reason=reason,
              fidelity=k,
            )
          )
          if on_record is not None:
            on_record(record)
    finally:
      executor.close()


def ranked_for_retraining(history: History, budget: Budget) -> list[Record]:
  """Feasible successful records, one per architecture at the highest rung it passed,
  highest rung first, then by objective; a tie at that rung (small validation sets make
  them common) is broken by the objectives at the rungs below, highest first."""
  best: dict[tuple[int, ...], Record] = {}
  scores: dict[tuple[int, ...], dict[int, float]] = {}
  for r in history.successful(None):
    if not budget.fits(r.costs):
      continue
    seen = best.get(r.tokens)
    if seen is None or r.fidelity > seen.fidelity:
      best[r.tokens] = r
    scores.setdefault(r.tokens, {})[r.fidelity] = r.objective

  def key(r: Record) -> tuple[float, ...]:
    below = scores[r.tokens]
    return (-r.fidelity, *(-below.get(f, -math.inf) for f in range(r.fidelity, -1, -1)))

  return sorted(best.values(), key=key)


def num_planned(num_candidates: int, config: PromotionConfig) -> list[int]:
  """How many candidates each rung trains when all ``num_candidates`` succeed."""
  counts, n = [], num_candidates
  for _ in config.parsed:
    n = min(n, max(config.min_keep, math.ceil(config.keep * n)))
    counts.append(n)
  return counts
