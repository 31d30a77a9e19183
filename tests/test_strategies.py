"""Strategies: what each proposes, on a cheap deterministic evaluator."""

import dataclasses
import itertools

import jax
import numpy as np
import pytest
from scipy import stats

from nasq import acquisition, evaluators, gp, strategies
from nasq.loop import run_strategy
from nasq.spaces import MacroSpace, MacroSpaceConfig

BO = strategies.StrategySettings(map_steps=50, num_raw=128, num_starts=4, ascent_steps=30)


def proposals_mean(history, source):
  values = [r.objective for r in history.evaluated() if r.source == source]
  assert values, f"no evaluation from {source}"
  return float(np.mean(values))


@pytest.mark.parametrize("seed", [0, 1])
def test_latent_bo_proposes_better_networks_than_random_search(
  tmp_path, small_ae, make_ctx, run_initial, cheap_evaluate, seed
):
  """On a smooth objective, with the same initial design, latent BO's own proposals
  (not random fallbacks) score higher on average than random search's."""
  key = jax.random.key(seed)
  means = {}
  for name in ("latent_bo", "random"):
    ctx = make_ctx(small_ae, path=tmp_path / name)
    run_initial(ctx, key, 5)
    strategy = strategies.make_strategy(name, BO, small_ae)
    run_strategy(
      ctx,
      strategy,
      cheap_evaluate,
      evaluators.Objective(),
      15,
      jax.random.fold_in(key, 2),
    )
    assert {r.source for r in ctx.history.evaluated()[5:]} == {name}
    means[name] = proposals_mean(ctx.history, name)
  assert means["latent_bo"] > means["random"] + 0.05, means


def test_nuts_hyperparameters_steer_the_search(
  tmp_path, small_ae, make_ctx, run_initial, cheap_evaluate
):
  ctx = make_ctx(small_ae, params=3000)
  key = jax.random.key(1)
  run_initial(ctx, key, 4)
  settings = dataclasses.replace(
    BO, hyperparameters="nuts", nuts_warmup=50, nuts_samples=50, nuts_kept=4
  )
  bo = strategies.make_strategy("latent_bo", settings, small_ae)
  run_strategy(ctx, bo, cheap_evaluate, evaluators.Objective(), 10, jax.random.key(2))
  later = ctx.history.evaluated()[4:]
  assert {r.source for r in later} == {"latent_bo"} and len(later) == 6
  assert all(r.latent is not None and r.costs["params"] <= 3000 for r in later)
  assert proposals_mean(ctx.history, "latent_bo") > proposals_mean(ctx.history, "initial")


def test_kriging_believer_collapses_the_pending_points_variance_and_improvement(
  small_ae, make_ctx, run_initial
):
  ctx = make_ctx(small_ae)
  run_initial(ctx, jax.random.key(0), 8)
  bo = strategies.LatentBO(dataclasses.replace(BO, num_raw=64, ascent_steps=20), small_ae)
  pending = bo.propose(ctx, jax.random.key(1))[0].tokens

  ok = ctx.history.successful()
  x = np.stack([bo._latent(r.tokens) for r in ok]).astype(np.float32)
  y = np.array([r.objective for r in ok], np.float32)
  xq = bo._latent(pending)[None].astype(np.float32)
  xp = np.concatenate([x, xq, np.zeros((16 - len(x) - 1, x.shape[1]), np.float32)])
  mask = np.r_[np.ones(len(x)), np.zeros(16 - len(x))].astype(np.float32)
  ys, _, _ = gp.standardize(np.r_[y, np.zeros(16 - len(y))].astype(np.float32), mask)
  params = gp.fit_map("matern52", xp, ys, jax.random.key(2), mask, steps=50)
  samples = jax.tree.map(lambda v: v[None], params)
  posts = jax.vmap(lambda p: gp.condition("matern52", p, xp, ys, mask))(samples)
  believed = bo._believe_pending(posts, samples, xp, ys, len(x), 1)
  before = jax.vmap(lambda p: gp.predict("matern52", p, xq))(posts)
  after = jax.vmap(lambda p: gp.predict("matern52", p, xq))(believed)
  np.testing.assert_allclose(after[0], before[0], rtol=1e-3, atol=1e-3)  # same mean
  assert float(after[1][0, 0]) < 0.2 * float(before[1][0, 0])
  # So the improvement expected at the pending point falls (here by about 2x).
  best = float(np.max(ys[: len(x)]))
  log_ei = [
    float(acquisition.log_expected_improvement(m[0, 0], np.sqrt(v[0, 0]), best))
    for m, v in (before, after)
  ]
  assert log_ei[1] < log_ei[0] - 0.5


TINY_SPACE = MacroSpaceConfig(
  input_shape=(4, 4, 1),
  min_layers=1,
  max_layers=2,
  ops=("conv3", "maxpool"),
  channels=(4, 8),
  strides=(1,),
  residual=False,
)


def test_random_search_is_uniform_over_the_feasible_architectures(make_ctx, tmp_path):
  """Chi-square against the uniform distribution over every feasible architecture,
  enumerated by brute force."""
  space = MacroSpace(TINY_SPACE)
  every = [
    t
    for t in itertools.product(*(range(v) for v in space.vocab_sizes))
    if space.is_valid(t)
  ]
  ctx = strategies.SearchContext(
    space, strategies.Budget(params=200), 32, 8, make_ctx().history
  )
  feasible = [t for t in every if ctx.costs(t)["params"] <= 200]
  assert 4 <= len(feasible) < len(every)  # the budget bites
  rs = strategies.RandomSearch()
  draws = [
    rs.propose(ctx, jax.random.key(i))[0].tokens for i in range(60 * len(feasible))
  ]
  counts = np.array([draws.count(t) for t in feasible])
  assert counts.sum() == len(draws)  # nothing infeasible was proposed
  assert stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize("tournament_size", [6, 1])
def test_evolution_mutates_tournament_winners(make_ctx, run_initial, tournament_size):
  """A tournament as large as the population always picks its best as the parent; a
  tournament of one picks parents from across the population."""
  ctx = make_ctx()
  run_initial(ctx, jax.random.key(0), 6)
  evo = strategies.RegularizedEvolution(
    population_size=6, tournament_size=tournament_size
  )
  parents = []
  mutate = ctx.space.mutate
  ctx.space.mutate = lambda arch, rng: (
    parents.append(arch.to_string()) or mutate(arch, rng)
  )
  children = [p.tokens for i in range(5) for p in evo.propose(ctx, jax.random.key(i))]
  assert len(parents) == len(children) == 40
  assert all(ctx.space.is_valid(t) for t in children)
  if tournament_size == 6:
    assert set(parents) == {ctx.history.best().arch}
  else:
    assert len(set(parents)) >= 4


def test_bad_names():
  with pytest.raises(ValueError, match="search.strategy must be one of"):
    strategies.make_strategy("grid", strategies.StrategySettings())
  with pytest.raises(ValueError, match="gp.kernel must be one of"):
    strategies.StrategySettings(kernel="linear")
  with pytest.raises(ValueError, match="strategies.hyperparameters must be one of"):
    strategies.StrategySettings(hyperparameters="vi")
  with pytest.raises(ValueError, match="strategies.tournament_size must be in"):
    strategies.StrategySettings(tournament_size=30)
