"""Training the autoencoder: the MMD against NumPy, learning, held-out data, NB201."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from nasq import autoencoder as ae_lib
from nasq.costs import compute_costs
from nasq.spaces import MacroSpace, NB201Space


def numpy_mmd_imq(x, y, scales):
  n, d = x.shape

  def k(a, b):
    dist = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return sum(2 * d * s / (2 * d * s + dist) for s in scales)

  off = 1 - np.eye(n)
  return (
    (k(x, x) * off).sum() / (n * (n - 1))
    + (k(y, y) * off).sum() / (n * (n - 1))
    - 2 * k(x, y).mean()
  )


def test_mmd_matches_numpy_and_separates_distributions():
  rng = np.random.default_rng(0)
  scales = (0.1, 1.0, 10.0)
  x, y = rng.normal(size=(64, 5)), rng.normal(size=(64, 5))
  got = float(ae_lib.mmd_imq(jnp.asarray(x), jnp.asarray(y), scales))
  np.testing.assert_allclose(got, numpy_mmd_imq(x, y, scales), rtol=1e-4, atol=1e-6)
  shifted = float(ae_lib.mmd_imq(jnp.asarray(x + 2.0), jnp.asarray(y), scales))
  assert shifted > 20 * abs(got)


def test_training_learns_to_reconstruct_held_out_architectures(small_ae):
  ae, config = small_ae, small_ae.config
  assert ae.history[-1]["recon"] < 0.2 * ae.history[0]["recon"]
  train, holdout = ae_lib.training_data(
    ae.space, config, np.random.default_rng(config.seed)
  )
  seen = {t.tobytes() for t in train.tokens}
  assert not any(t.tobytes() in seen for t in holdout.tokens)  # really held out
  # The predictor's spread is its held-out error, in log units, against the costs
  # computed here from each held-out architecture (at the float weights the
  # autoencoder is trained with).
  archs = ae.space.decode_many(holdout.tokens)
  targets = np.log([[c.params, c.macs] for c in map(compute_costs, archs)])
  pred = ae.predict_log_costs(ae.encode(holdout.tokens))
  rmse = np.sqrt(np.mean((pred - targets) ** 2, axis=0))
  np.testing.assert_allclose(ae.predictor_rmse, rmse, rtol=1e-4)


def test_space_without_architectures_is_a_clear_error(tiny_ae_config):
  # Two stride-2 layers reach 1x1; four are needed.
  space = MacroSpace(
    dataclasses.replace(
      MacroSpace().config, input_shape=(4, 4, 1), strides=(2,), min_layers=4
    )
  )
  with pytest.raises(ValueError, match="no valid architecture"):
    ae_lib.train(space, tiny_ae_config(), progress=False)


def test_nb201_reconstructs_every_cell(tiny_ae_config):
  space = NB201Space()
  config = tiny_ae_config(latent_dim=8, hidden=128, steps=1200, batch_size=256)
  ae = ae_lib.train(space, config, progress=False)
  tokens = space.all_tokens()
  assert (ae.decode(ae.encode(tokens)) == tokens).all(axis=1).mean() >= 0.999
