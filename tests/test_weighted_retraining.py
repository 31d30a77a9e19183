"""Weighted retraining of the autoencoder (``nasq.autoencoder.FineTuner``) and latent
BO's use of it (``StrategySettings.retrain_every``)."""

import dataclasses

import jax
import numpy as np
import pytest

from nasq import autoencoder as ae_lib
from nasq import evaluators, strategies
from nasq.loop import run_strategy
from nasq.strategies.latent_bo import LatentBO


def test_rank_weights_follow_tripp_et_al():
  w = ae_lib.rank_weights(np.array([0.5, 0.9, -np.inf, 0.7]), k=0.01)
  np.testing.assert_allclose(w.sum(), 1.0)
  # 1 / (k N + rank): ranks 2, 0, 3, 1.
  expected = 1 / (0.04 + np.array([2, 0, 3, 1]))
  np.testing.assert_allclose(w, expected / expected.sum())
  # A larger k spreads the mass.
  assert ae_lib.rank_weights(np.array([0.5, 0.9]), k=10.0)[1] < w[1] / (w[1] + w[0])


@pytest.fixture(scope="module")
def tuner(small_ae):
  return ae_lib.FineTuner(small_ae, steps=60)


def _agreement(ae, target):
  """The mean share of tokens that decodings of prior draws share with ``target``."""
  z = np.random.default_rng(0).normal(size=(2048, ae.latent_dim))
  return float((ae.decode(z) == target).mean())


def test_fine_tuning_gives_the_up_weighted_architecture_more_of_the_prior(
  small_ae, tuner
):
  rng = np.random.default_rng(3)
  tokens = small_ae.space.sample_tokens(rng, 8, "uniform")
  weights = np.r_[1.0, np.zeros(7)]  # everything on the first
  tuned = tuner(tokens, weights, seed=7)
  # Decodings of prior draws move towards it (about 0.53 -> 0.61 of tokens shared).
  assert _agreement(tuned, tokens[0]) > _agreement(small_ae, tokens[0]) + 0.03
  assert tuned.fingerprint != small_ae.fingerprint
  # From the trained weights each time, whatever was tuned before: same inputs, same
  # weights; the trained autoencoder itself is untouched.
  tuner(tokens, np.full(8, 1 / 8), seed=1)
  assert tuner(tokens, weights, seed=7).fingerprint == tuned.fingerprint
  assert small_ae.fingerprint == dataclasses.replace(small_ae).fingerprint
  # The copy shares the compiled functions and decodes validly.
  assert tuned._decode is small_ae._decode
  z = np.random.default_rng(0).normal(size=(16, small_ae.latent_dim))
  small_ae.space.automaton.state_path(tuned.decode(z))  # raises on invalid tokens


def test_fine_tuning_needs_one_weight_per_architecture(small_ae, tuner):
  tokens = small_ae.space.sample_tokens(np.random.default_rng(0), 3, "uniform")
  with pytest.raises(ValueError, match="one weight per architecture"):
    tuner(tokens, np.ones(2), seed=0)


def test_retrain_every_is_checked():
  with pytest.raises(ValueError, match="retrain_every"):
    strategies.StrategySettings(retrain_every=-1)
  with pytest.raises(ValueError, match="retrain_k"):
    strategies.StrategySettings(retrain_k=0.0)


def test_latent_bo_retrains_at_each_boundary_and_decodes_with_the_result(
  tmp_path, small_ae, make_ctx, run_initial, cheap_evaluate
):
  settings = strategies.StrategySettings(
    map_steps=50, pool_size=128, retrain_every=4, retrain_steps=30
  )
  ctx = make_ctx(small_ae, path=tmp_path / "a")
  run_initial(ctx, jax.random.key(0), 3)
  strategy = strategies.make_strategy("latent_bo", settings, small_ae)
  ok = ctx.history.successful()
  assert strategy._autoencoder_for(ok, ctx.budget) is small_ae  # fewer than 4
  run_strategy(
    ctx, strategy, cheap_evaluate, evaluators.Objective(), 9, jax.random.key(1)
  )
  ok = ctx.history.successful()
  assert len(ok) == 9
  used = strategy._autoencoder_for(ok, ctx.budget)
  assert used is not small_ae and used is strategy._autoencoder_for(ok, ctx.budget)
  # Retrained on the first 8 records: a fresh strategy (a resumed search) gets the
  # same weights.
  fresh = LatentBO(settings, small_ae)._autoencoder_for(ok[:8], ctx.budget)
  assert fresh.fingerprint == used.fingerprint
  # The proposals after the last boundary are decodings by the retrained autoencoder.
  last = [r for r in ctx.history.records[-1:] if r.source == "latent_bo"]
  assert last and last[0].latent is not None
  decoded = tuple(int(v) for v in used.decode(np.asarray([last[0].latent]))[0])
  assert decoded == last[0].tokens
