"""The autoencoder's modules: option scores, convexity of the FICNN, valid decoding."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasq import autoencoder as ae_lib
from nasq.spaces import MacroSpace


def test_option_scores_match_a_loop():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, 4, 6)).astype(np.float32)  # [n, block_size, V]
  options = rng.integers(0, 6, size=(3, 5, 4))
  valid = rng.random((3, 5)) > 0.3
  valid[:, 0] = True
  got = np.asarray(ae_lib.option_scores(logits, options, valid))
  for i in range(3):
    raw = np.array([logits[i, np.arange(4), options[i, o]].sum() for o in range(5)])
    raw = np.where(valid[i], raw, -np.inf)
    ref = (
      raw
      - np.log(np.exp(raw[valid[i]] - raw[valid[i]].max()).sum())
      - raw[valid[i]].max()
    )
    np.testing.assert_allclose(got[i][valid[i]], ref[valid[i]], rtol=1e-5, atol=1e-5)
    assert np.all(np.isneginf(got[i][~valid[i]]))


@pytest.mark.parametrize("seed", range(5))
def test_ficnn_is_convex_for_random_weights(seed):
  model = ae_lib.FICNN(hidden=(32, 32, 16), outputs=2)
  params = model.init(jax.random.key(seed), jnp.zeros((1, 6)))
  # Scale the free weights up so the test does not only see a near-linear function.
  params = jax.tree.map(lambda p: 3.0 * p, params)
  gap = ae_lib.convexity_violation(
    lambda z: model.apply(params, z), jax.random.key(100 + seed), 6
  )
  assert gap <= 1e-5


def wild(params):
  """Every parameter redrawn from N(-2, 4^2): mostly negative, large."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree.unflatten(
    treedef,
    [
      -2.0 + 4.0 * jax.random.normal(k, v.shape)
      for k, v in zip(keys, leaves, strict=True)
    ],
  )


def test_ficnn_stays_convex_whatever_its_free_parameters():
  """Training moves the hidden-path parameters anywhere, negative values included: the
  network must stay convex for every value (a plain Dense there would not)."""
  model = ae_lib.FICNN(hidden=(16, 16), outputs=1)
  params = wild(model.init(jax.random.key(0), jnp.zeros((1, 3))))
  gap = ae_lib.convexity_violation(lambda z: model.apply(params, z), jax.random.key(2), 3)
  assert gap <= 1e-4
  # The same draw in a non-negativity-free network of the same shape is not convex.
  free = nn.Sequential(
    [nn.Dense(16), nn.softplus, nn.Dense(16), nn.softplus, nn.Dense(1)]
  )
  free_params = wild(free.init(jax.random.key(0), jnp.zeros((1, 3))))
  assert (
    ae_lib.convexity_violation(lambda z: free.apply(free_params, z), jax.random.key(2), 3)
    > 1e-3
  )


@pytest.mark.parametrize("encoder", ["additive", "mlp"])
def test_untrained_decoder_maps_any_latent_point_to_a_valid_architecture(
  encoder, small_space_config, tiny_ae_config
):
  space = MacroSpace(small_space_config)
  config = tiny_ae_config(encoder=encoder)
  model = ae_lib.build_model(space, config)
  params = model.init(
    jax.random.key(0),
    jnp.zeros((2, space.num_positions), jnp.int32),
    jnp.zeros((2, space.automaton.num_blocks), jnp.int32),
  )
  ae = ae_lib.TrainedAutoencoder(
    space, config, model, params, np.zeros(2), np.ones(2), np.zeros(2)
  )
  z = 10.0 * np.random.default_rng(0).normal(size=(500, config.latent_dim))
  tokens = ae.decode(z)
  # The space's own rules, not the automaton the decoder is masked by.
  assert all(space.is_valid(t) for t in tokens)
  assert len({t.tobytes() for t in tokens}) > 1


def test_a_trained_autoencoder_is_immutable(small_ae):
  with pytest.raises(dataclasses.FrozenInstanceError):
    small_ae.predictor_rmse = np.zeros(2)
  assert len(small_ae.history) == small_ae.config.steps // 100


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("latent_dim", 0, "autoencoder.latent_dim must be >= 1"),
    ("encoder", "gru", "autoencoder.encoder must be one of"),
    ("distribution", "normal", "autoencoder.distribution must be one of"),
    ("mmd_weight", -1.0, "autoencoder.mmd_weight must be >= 0"),
    ("predictor_hidden", (), "autoencoder.predictor_hidden must be"),
  ],
)
def test_bad_config_is_named(tiny_ae_config, field, value, match):
  with pytest.raises(ValueError, match=match):
    tiny_ae_config(**{field: value})
