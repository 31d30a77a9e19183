"""TuRBO's trust region for latent BO, replayed from the search's history."""

from __future__ import annotations

import dataclasses
import math

from nasq.costs import Budget
from nasq.history import History
from nasq.strategies.base import StrategySettings


@dataclasses.dataclass(frozen=True)
class TrustRegion:
  """TuRBO's trust region (Eriksson et al. 2019), in the unit cube of normalized codes:
  its side doubles after ``success_tol`` improvements in a row, halves after
  ``failure_tol`` failures in a row, and restarts at ``initial`` below ``minimum``."""

  length: float
  successes: int = 0
  failures: int = 0


def trust_region_from_history(
  history: History, budget: Budget, source: str, settings: StrategySettings, dim: int
) -> TrustRegion:
  """The trust region after replaying every evaluation in order (nothing else is kept,
  so a resumed search continues with the same region). A proposal of ``source``
  succeeds when it beats the best feasible objective before it by more than 1e-3 of
  its magnitude."""
  failure_tol = settings.tr_failure_tol or max(4, dim)
  tr = TrustRegion(settings.tr_initial)
  best = -math.inf
  for r in history.evaluated():
    value = r.objective if r.status == "ok" and budget.fits(r.costs) else None
    if r.source == source:
      if value is not None and value > best + 1e-3 * abs(best if best > -math.inf else 0):
        tr = TrustRegion(tr.length, tr.successes + 1, 0)
      else:
        tr = TrustRegion(tr.length, 0, tr.failures + 1)
      if tr.successes >= settings.tr_success_tol:
        tr = TrustRegion(min(2 * tr.length, settings.tr_maximum))
      elif tr.failures >= failure_tol:
        length = tr.length / 2
        tr = TrustRegion(length if length >= settings.tr_minimum else settings.tr_initial)
    if value is not None:
      best = max(best, value)
  return tr


__all__ = ["TrustRegion", "trust_region_from_history"]
