"""What an autoencoder is judged by: the quality report and the convexity check."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasq import autoencoder as ae_lib


def test_convexity_check_catches_a_non_convex_network():
  model = nn.Sequential([nn.Dense(32), nn.tanh, nn.Dense(2)])
  params = model.init(jax.random.key(0), jnp.zeros((1, 6)))
  gap = ae_lib.convexity_violation(lambda z: model.apply(params, z), jax.random.key(1), 6)
  assert gap > 1e-3


def test_r_squared_against_its_definition():
  rng = np.random.default_rng(0)
  true = rng.normal(size=100)
  assert ae_lib.r_squared(true, true) == 1.0
  assert abs(ae_lib.r_squared(np.full(100, true.mean()), true)) < 1e-12
  pred = true + rng.normal(size=100)
  ref = 1 - ((pred - true) ** 2).sum() / ((true - true.mean()) ** 2).sum()
  np.testing.assert_allclose(ae_lib.r_squared(pred, true), ref)


def test_quality_report_of_the_trained_small_autoencoder(small_ae):
  config = small_ae.config
  _, holdout = ae_lib.training_data(
    small_ae.space, config, np.random.default_rng(config.seed)
  )
  report = ae_lib.quality_report(small_ae, holdout, num_prior=300, num_uniform=300)
  assert report["holdout"]["exact"] >= 0.9
  assert report["holdout"]["count"] == config.num_holdout
  assert report["prior"]["valid"] == 1.0 and report["prior"]["count"] == 300
  assert report["predictor"]["log_params"]["r2"] > 0.8
  assert report["predictor_convexity_max_gap"] <= 1e-5  # the trained predictor too
  # Locality: the larger the step in the latent space, the more tokens change.
  changed = [r["mean_tokens_changed"] for r in report["locality"].values()]
  assert changed == sorted(changed) and changed[-1] > changed[0]
