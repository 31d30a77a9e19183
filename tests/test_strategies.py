"""Strategies and the shared search loop, on a cheap deterministic evaluator."""

import math

import jax
import ml_collections
import numpy as np
import pytest

from nasq import autoencoder as ae_lib
from nasq import evaluators, search, strategies
from nasq.history import History
from nasq.spaces import MacroSpace
from tests.test_autoencoder import small_space_config, tiny_config


def cheap_evaluate(arch, seed):
  """A smooth function of the architecture's size: best near 2,000 parameters."""
  from nasq.costs import compute_costs

  params = compute_costs(arch).params
  return evaluators.Evaluation(
    "ok", {"val_accuracy": 1.0 - abs(math.log(params / 2000)) / 10}, 0.0
  )


@pytest.fixture(scope="module")
def small_ae():
  return ae_lib.train(MacroSpace(small_space_config()), tiny_config(), progress=False)


def make_ctx(tmp_path, ae=None, **budget):
  space = MacroSpace(small_space_config())
  return strategies.SearchContext(
    space,
    strategies.Budget(**budget),
    weight_bits=4,
    activation_bits=8,
    history=History.open(tmp_path),
    autoencoder=ae,
  )


def objective():
  return evaluators.default_objective_config()


def run_initial(ctx, key, n):
  """The shared random initial design, as the search runs it."""
  search.run_strategy(
    ctx,
    strategies.RandomSearch(),
    cheap_evaluate,
    objective(),
    n,
    key,
    label="initial",
    count_all=False,
  )


def bo_config():
  c = strategies.default_config()
  c.map_steps = 50
  c.num_raw = 128
  c.num_starts = 4
  c.ascent_steps = 30
  return c


@pytest.mark.parametrize("name", ["random", "evolution", "latent_bo"])
def test_every_strategy_respects_budget_and_never_repeats(tmp_path, small_ae, name):
  ctx = make_ctx(tmp_path, small_ae, params=3000)
  key = jax.random.key(0)
  run_initial(ctx, key, 4)
  strategy = strategies.make_strategy(name, bo_config(), small_ae)
  search.run_strategy(ctx, strategy, cheap_evaluate, objective(), 12, key)
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


def test_latent_bo_beats_its_initial_design(tmp_path, small_ae):
  ctx = make_ctx(tmp_path, small_ae)
  key = jax.random.key(1)
  run_initial(ctx, key, 5)
  initial_best = ctx.history.best().objective
  bo = strategies.make_strategy("latent_bo", bo_config(), small_ae)
  search.run_strategy(ctx, bo, cheap_evaluate, objective(), 10, key)
  assert ctx.history.best().objective >= initial_best
  assert any(r.latent is not None for r in ctx.history.evaluated()[5:])


def test_nuts_hyperparameters_run(tmp_path, small_ae):
  ctx = make_ctx(tmp_path, small_ae)
  key = jax.random.key(2)
  run_initial(ctx, key, 4)
  c = bo_config()
  c.hyperparameters = "nuts"
  c.nuts_warmup, c.nuts_samples, c.nuts_kept = 50, 50, 4
  bo = strategies.make_strategy("latent_bo", c, small_ae)
  search.run_strategy(ctx, bo, cheap_evaluate, objective(), 6, key)
  assert ctx.history.num_evaluated() == 6


def test_resume_continues_without_repeating(tmp_path):
  ctx = make_ctx(tmp_path)
  key = jax.random.key(3)
  search.run_strategy(ctx, strategies.RandomSearch(), cheap_evaluate, objective(), 3, key)
  resumed = make_ctx(tmp_path)  # a new process: the history is reread
  assert resumed.history.num_evaluated() == 3
  search.run_strategy(
    resumed, strategies.RandomSearch(), cheap_evaluate, objective(), 6, key
  )
  indices = [r.index for r in History.open(tmp_path)]
  assert indices == list(range(len(indices)))
  assert History.open(tmp_path).num_evaluated() == 6


def test_failed_candidates_are_recorded_and_the_search_goes_on(tmp_path):
  ctx = make_ctx(tmp_path)
  calls = []

  def flaky(arch, seed):
    calls.append(seed)
    if len(calls) % 2:
      return evaluators.Evaluation("failed", {}, 0.0, "non-finite training loss")
    return cheap_evaluate(arch, seed)

  search.run_strategy(
    ctx, strategies.RandomSearch(), flaky, objective(), 6, jax.random.key(4)
  )
  statuses = [r.status for r in ctx.history.evaluated()]
  assert statuses.count("failed") == 3 and statuses.count("ok") == 3
  assert all(r.reason for r in ctx.history.evaluated() if r.status == "failed")


def test_cost_objective_and_bad_names():
  c = evaluators.default_objective_config()
  c.kind = "cost"
  v = evaluators.objective_value(c, {"val_accuracy": 0.9}, {"params": 1e4, "macs": 1e6})
  assert v == pytest.approx(0.9 - 0.01 * 4 - 0.01 * 6)
  c.kind = "accuracy"
  with pytest.raises(ValueError, match="objective.kind must be one of"):
    evaluators.objective_value(c, {"val_accuracy": 0.9}, {"params": 1, "macs": 1})
  with pytest.raises(ValueError, match="search.strategy must be one of"):
    strategies.make_strategy("grid", strategies.default_config())
  budget = ml_collections.ConfigDict(
    {"model_size_bits": -1.0, "macs": None, "peak_activation_bytes": None, "params": None}
  )
  with pytest.raises(ValueError, match="budget.model_size_bits must be > 0"):
    strategies.Budget.from_config(budget)
  c = strategies.default_config()
  c.kernel = "linear"
  with pytest.raises(ValueError, match="gp.kernel must be one of"):
    strategies.make_strategy("latent_bo", c, object())


def test_random_search_is_uniform_over_feasible(tmp_path):
  ctx = make_ctx(tmp_path, params=400)
  rs = strategies.RandomSearch()
  rng = np.random.default_rng(0)
  got = rs.sample_feasible(ctx, rng, 50)
  assert len(set(got)) == 50
  assert all(ctx.costs(t)["params"] <= 400 for t in got)
