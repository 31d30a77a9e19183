"""The strategy loop every driver shares: propose -> decode -> exact cost -> budget check
-> dedupe -> executor -> history.

The search (``nasq.runs.search``) and the strategy comparison (``nasq.runs.compare``)
both run their strategies through ``run_strategy``, so every strategy meets the same
budget check and the same evaluator: comparisons are fair by construction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from typing import Any

import jax

from nasq.evaluators import Evaluation, Evaluator, Objective
from nasq.executors import Executor, LocalExecutor
from nasq.history import (
  STATUS_DUPLICATE,
  STATUS_INFEASIBLE,
  Record,
)
from nasq.strategies import RandomSearch, SearchContext, Strategy


def run_strategy(
  ctx: SearchContext,
  strategy: Strategy,
  evaluate: Evaluator | None,
  objective: Objective,
  num_evaluations: int,
  key: jax.Array,
  *,
  label: str | None = None,
  count_all: bool = True,
  seed: int = 0,
  on_record: Callable[[Record], None] | None = None,
  max_rejections: int = 100,
  executor: Executor | None = None,
) -> None:
  """Runs ``strategy`` until the history holds ``num_evaluations`` evaluations: all of
  them with ``count_all``, else those recorded under ``label`` (the source written in
  each record; the strategy's name by default).

  Each proposal is decoded and costed exactly before anything else: an architecture over
  budget is recorded ``infeasible``, one evaluated before ``duplicate`` (naming the
  earlier record); neither is trained. A distinct rejected architecture is recorded
  once. After ``max_rejections`` rejections in a row, proposals come from random
  search so the run cannot stall.

  Evaluations run on ``executor`` (by default ``evaluate`` in this process, one at a
  time). It keeps ``executor.num_workers`` in flight: the strategy
  proposes for each free worker while the others run (``ctx.pending`` holds their
  architectures, so nothing is proposed twice), and each result is written to the
  history as it arrives. A candidate's training seed is ``seed`` plus the index it
  would have in submission order.
  """

  if executor is None:
    if evaluate is None:
      raise ValueError("run_strategy needs an evaluator or an executor")
    executor = LocalExecutor(evaluate)
  loop = _Loop(
    ctx,
    strategy,
    executor,
    objective,
    label or strategy.name,
    key,
    seed,
    on_record,
    max_rejections,
    rejected={
      r.tokens for r in ctx.history if r.status in (STATUS_INFEASIBLE, STATUS_DUPLICATE)
    },
  )
  count = lambda: ctx.history.num_evaluated(None if count_all else loop.source)  # noqa: E731
  ctx.pending = []
  try:
    while True:
      while len(loop.pending) < executor.num_workers and (
        count() + len(loop.pending) < num_evaluations
      ):
        loop.submit_next()
      if not loop.pending:
        return
      for handle, result in executor.wait_any(list(loop.pending)):
        loop.record_result(handle, result)
  finally:
    ctx.pending = []


@dataclasses.dataclass
class _Loop:
  """The state of one ``run_strategy`` call."""

  ctx: SearchContext
  strategy: Strategy
  executor: Executor
  objective: Objective
  source: str
  key: jax.Array
  seed: int
  on_record: Callable[[Record], None] | None
  max_rejections: int = 100
  misses: int = 0  # rejections in a row
  rejected: set[tuple[int, ...]] = dataclasses.field(default_factory=set)
  pending: dict[Hashable, dict[str, Any]] = dataclasses.field(default_factory=dict)
  fallback: Strategy = dataclasses.field(default_factory=RandomSearch)

  def _publish_pending(self) -> None:
    """What strategies see as being evaluated: derived from the tasks in flight."""
    self.ctx.pending = [c["tokens"] for c in self.pending.values()]

  def _append(self, **fields) -> None:
    record = self.ctx.history.append(Record(index=self.ctx.history.next_index, **fields))
    if self.on_record:
      self.on_record(record)

  def submit_next(self) -> None:
    """Proposes until one architecture is submitted, recording the rejected ones."""
    ctx = self.ctx
    while True:
      step_key = jax.random.fold_in(self.key, ctx.history.next_index)
      if self.pending:
        step_key = jax.random.fold_in(step_key, len(self.pending))
      use = self.strategy if self.misses < self.max_rejections else self.fallback
      proposals = use.propose(ctx, step_key)
      if not proposals:
        raise RuntimeError(
          f"{use.name} found no new architecture that fits the budget {ctx.budget}"
        )
      for proposal in proposals:
        tokens = proposal.tokens
        if tokens in ctx.pending:
          self.misses += 1
          continue
        arch = ctx.space.decode(tokens)
        costs = ctx.costs(tokens)
        fallback = use is not self.strategy or proposal.fallback
        common = dict(
          source=f"{self.source}/random" if fallback else self.source,
          origin="random" if fallback else proposal.origin,
          arch=arch.to_string(),
          tokens=tokens,
          costs=costs,
          latent=proposal.latent,
        )
        earlier = ctx.history.evaluated_index(tokens)
        if earlier is not None or not ctx.budget.fits(costs):
          self.misses += 1
          if tokens not in self.rejected:
            self.rejected.add(tokens)
            self._append(
              status=STATUS_DUPLICATE if earlier is not None else STATUS_INFEASIBLE,
              duplicate_of=earlier,
              reason="; ".join(ctx.budget.violations(costs)) if earlier is None else "",
              **common,
            )
          continue
        common["seed"] = self.seed + ctx.history.next_index + len(self.pending)
        self.pending[self.executor.submit(arch, common["seed"])] = common
        self._publish_pending()
        self.misses = 0
        return

  def record_result(self, handle: Hashable, result: Evaluation) -> None:
    common = self.pending.pop(handle)
    self._publish_pending()
    status, value, reason = self.objective.judge(result, common["costs"])
    self._append(
      status=status,
      objective=value,
      metrics=result.metrics,
      seconds=result.seconds,
      reason=reason,
      **common,
    )


__all__ = ["run_strategy"]
