"""The strategy loop every driver shares: budget check, dedupe, failures, resume,
fallback, on a cheap deterministic evaluator."""

import jax
import numpy as np
import pytest

from nasq import evaluators, strategies
from nasq.history import History
from nasq.loop import run_strategy

BO = strategies.StrategySettings(map_steps=50, pool_size=128)


@pytest.mark.parametrize("name", ["random", "evolution", "latent_bo"])
def test_every_strategy_respects_budget_and_never_repeats(
  small_ae, make_ctx, run_initial, cheap_evaluate, name
):
  ctx = make_ctx(small_ae, params=3000)
  key = jax.random.key(0)
  run_initial(ctx, key, 4)
  strategy = strategies.make_strategy(name, BO, small_ae)
  run_strategy(ctx, strategy, cheap_evaluate, evaluators.Objective(), 12, key)
  evaluated = ctx.history.evaluated()
  assert len(evaluated) == 12
  assert len({r.tokens for r in evaluated}) == 12  # no architecture trained twice
  assert all(r.costs["params"] <= 3000 for r in evaluated)  # none over budget trained
  for r in ctx.history:
    if r.status == "infeasible":
      assert r.costs["params"] > 3000 and "params" in r.reason
    if r.status == "duplicate":
      assert ctx.history.records[r.duplicate_of].tokens == r.tokens
  assert {r.source for r in evaluated[4:]} <= {name, f"{name}/random"}


def test_resume_continues_without_repeating(tmp_path, make_ctx, cheap_evaluate):
  ctx = make_ctx()
  key = jax.random.key(3)
  objective = evaluators.Objective()
  run_strategy(ctx, strategies.RandomSearch(), cheap_evaluate, objective, 3, key)
  resumed = make_ctx()  # a new process: the history is reread
  assert resumed.history.num_evaluated() == 3
  run_strategy(resumed, strategies.RandomSearch(), cheap_evaluate, objective, 6, key)
  indices = [r.index for r in History.open(tmp_path)]
  assert indices == list(range(len(indices)))
  assert History.open(tmp_path).num_evaluated() == 6
  first = [r.tokens for r in History.open(tmp_path).evaluated()][:3]
  assert first == [r.tokens for r in ctx.history.evaluated()]


def test_failed_candidates_are_recorded_and_the_search_goes_on(make_ctx, cheap_evaluate):
  ctx = make_ctx()
  calls = []

  def flaky(arch, seed):
    calls.append(seed)
    if len(calls) % 2:
      return evaluators.Evaluation("failed", {}, 0.0, "non-finite training loss")
    if len(calls) == 6:  # ok, but without the metric the objective needs
      return evaluators.Evaluation("ok", {"train_loss": 1.0}, 0.0)
    return cheap_evaluate(arch, seed)

  run_strategy(
    ctx, strategies.RandomSearch(), flaky, evaluators.Objective(), 6, jax.random.key(4)
  )
  records = ctx.history.evaluated()
  assert [r.status for r in records] == ["failed", "ok"] * 2 + ["failed"] * 2
  assert records[-1].reason == "objective metric val_accuracy missing"
  assert all(r.reason for r in records if r.status == "failed")
  assert all(r.objective is None for r in records if r.status == "failed")


class _AlwaysOverBudget:
  """Proposes the same over-budget architecture every time."""

  name = "stuck"

  def __init__(self, tokens):
    self.tokens = tokens
    self.calls = 0

  def propose(self, ctx, key):
    self.calls += 1
    return [strategies.Proposal(self.tokens)]


def test_a_stalled_strategy_falls_back_to_random_and_says_so(make_ctx, cheap_evaluate):
  ctx = make_ctx(params=500)
  rng = np.random.default_rng(0)
  big = next(
    t
    for t in map(tuple, ctx.space.sample_tokens(rng, 500))
    if not ctx.budget.fits(ctx.costs(t))
  )
  stuck = _AlwaysOverBudget(tuple(int(v) for v in big))
  run_strategy(
    ctx,
    stuck,
    cheap_evaluate,
    evaluators.Objective(),
    2,
    jax.random.key(5),
    max_rejections=3,
  )
  infeasible = [r for r in ctx.history if r.status == "infeasible"]
  assert len(infeasible) == 1 and infeasible[0].source == "stuck"  # recorded once
  evaluated = ctx.history.evaluated()
  assert [r.source for r in evaluated] == ["stuck/random", "stuck/random"]
  assert [r.origin for r in evaluated] == ["random", "random"]
  assert all(ctx.budget.fits(r.costs) for r in evaluated)
  # Each submission gives the strategy max_rejections tries before random search.
  assert stuck.calls == 2 * 3


def test_run_strategy_needs_somewhere_to_evaluate(make_ctx):
  with pytest.raises(ValueError, match="needs an evaluator or an executor"):
    run_strategy(
      make_ctx(),
      strategies.RandomSearch(),
      None,
      evaluators.Objective(),
      1,
      jax.random.key(0),
    )
