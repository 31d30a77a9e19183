"""The architecture autoencoder: losses against references, validity, convexity, cache."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasq import autoencoder as ae_lib
from nasq.spaces import MacroSpace, NB201Space, macro, nb201


def small_space_config():
  c = macro.default_config()
  c.input_shape = (8, 8, 1)
  c.min_layers, c.max_layers = 1, 4
  c.ops = ("conv3", "dwsep3", "maxpool")
  c.channels = (4, 8)
  return c


def tiny_config(**overrides):
  c = ae_lib.default_config()
  c.latent_dim = 8
  c.embed_dim = 16
  c.hidden = 128
  c.predictor_hidden = (16, 16)
  c.distribution = "uniform"  # the small space's shallow nets are few: keep them
  c.num_train = 4000
  c.num_holdout = 300
  c.batch_size = 128
  c.steps = 1000
  c.warmup_steps = 50
  for k, v in overrides.items():
    c[k] = v
  return c


# --- pieces against references ----------------------------------------------------------


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


# --- convexity --------------------------------------------------------------------------


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


def test_convexity_check_catches_a_non_convex_network():
  import flax.linen as nn

  model = nn.Sequential([nn.Dense(32), nn.tanh, nn.Dense(2)])
  params = model.init(jax.random.key(0), jnp.zeros((1, 6)))
  gap = ae_lib.convexity_violation(lambda z: model.apply(params, z), jax.random.key(1), 6)
  assert gap > 1e-3


def test_ficnn_hidden_path_weights_are_non_negative():
  model = ae_lib.FICNN(hidden=(8, 8), outputs=1)
  params = model.init(jax.random.key(0), jnp.zeros((1, 3)))
  raws = [
    v
    for path, v in jax.tree_util.tree_leaves_with_path(params)
    if "raw_kernel" in str(path)
  ]
  assert len(raws) == 2
  assert all(bool((jax.nn.softplus(r) >= 0).all()) for r in raws)


# --- decoding validity ------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["additive", "mlp"])
def test_untrained_decoder_maps_any_latent_point_to_a_valid_architecture(encoder):
  space = MacroSpace(small_space_config())
  config = tiny_config(encoder=encoder)
  model = ae_lib.build_model(space, config)
  a = space.automaton
  params = model.init(
    jax.random.key(0),
    jnp.zeros((2, space.num_positions), jnp.int32),
    jnp.zeros((2, a.num_blocks), jnp.int32),
  )
  ae = ae_lib.TrainedAutoencoder(space, config, model, params, np.zeros(2), np.ones(2), 0)
  z = 10.0 * np.random.default_rng(0).normal(size=(500, config.latent_dim))
  tokens = ae.decode(z)
  assert all(
    space.is_valid(t) for t in tokens
  )  # the space's own rules, not the automaton
  assert len({t.tobytes() for t in tokens}) > 1


# --- training, quality, cache -----------------------------------------------------------


@pytest.fixture(scope="module")
def trained_small():
  space_config = small_space_config()
  config = tiny_config()
  return (
    space_config,
    config,
    ae_lib.train(MacroSpace(space_config), config, progress=False),
  )


def test_training_learns_to_reconstruct_held_out_architectures(trained_small):
  space_config, config, ae = trained_small
  history = ae.history
  assert history[-1]["recon"] < 0.2 * history[0]["recon"]
  _, holdout = ae_lib.training_data(ae.space, config, np.random.default_rng(config.seed))
  train, _ = ae_lib.training_data(ae.space, config, np.random.default_rng(config.seed))
  seen = {t.tobytes() for t in train.tokens}
  assert not any(t.tobytes() in seen for t in holdout.tokens)  # really held out
  report = ae_lib.quality_report(ae, holdout, num_prior=300, num_uniform=300)
  assert report["holdout"]["exact"] >= 0.9
  assert report["prior"]["valid"] == 1.0
  assert report["predictor"]["log_params"]["r2"] > 0.8
  assert report["predictor_convexity_max_gap"] <= 1e-5  # the trained predictor too


def test_cache_reuses_retrains_and_rejects(trained_small, tmp_path, monkeypatch):
  space_config, config, ae = trained_small
  key = ae_lib.cache_key(space_config, config)
  path = tmp_path / f"macro-{key}"
  ae_lib.save(ae, path, space_config)
  assert (path / "meta.json").exists()

  calls = []
  real_train = ae_lib.train

  def counting_train(*args, **kwargs):
    calls.append(1)
    return real_train(*args, **kwargs)

  monkeypatch.setattr(ae_lib, "train", counting_train)
  loaded = ae_lib.load_or_train(space_config, config, tmp_path, progress=False)
  assert not calls  # reused
  z = np.random.default_rng(0).normal(size=(50, config.latent_dim))
  np.testing.assert_array_equal(loaded.decode(z), ae.decode(z))
  np.testing.assert_allclose(loaded.predict_log_costs(z), ae.predict_log_costs(z))

  # Another autoencoder config or another space config: another key.
  other = tiny_config(seed=1)
  assert ae_lib.cache_key(space_config, other) != key
  other_space = small_space_config()
  other_space.channels = (4, 16)
  assert ae_lib.cache_key(other_space, config) != key

  # Loading an artifact for the wrong space or version is a clear error.
  with pytest.raises(ae_lib.AutoencoderCacheError, match="trained for space"):
    ae_lib.load(path, other_space)
  meta = json.loads((path / "meta.json").read_text())
  meta["format"] = -1
  (path / "meta.json").write_text(json.dumps(meta))
  with pytest.raises(ae_lib.AutoencoderCacheError, match="format"):
    ae_lib.load(path, space_config)

  # A corrupt entry is retrained, not loaded.
  (path / "meta.json").write_text("{not json")
  short = config.copy_and_resolve_references()
  monkeypatch.setattr(ae_lib, "cache_key", lambda s, c: key)  # same entry, fewer steps
  short.steps = 100
  retrained = ae_lib.load_or_train(space_config, short, tmp_path, progress=False)
  assert calls == [1]
  assert json.loads((path / "meta.json").read_text())["format"] == ae_lib.FORMAT_VERSION
  assert retrained.decode(z).shape == (50, MacroSpace(space_config).num_positions)


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("latent_dim", 0, "autoencoder.latent_dim must be >= 1"),
    ("encoder", "gru", "autoencoder.encoder must be one of"),
    ("distribution", "normal", "autoencoder.distribution must be one of"),
    ("mmd_weight", -1.0, "autoencoder.mmd_weight must be >= 0"),
  ],
)
def test_bad_config_is_named(field, value, match):
  with pytest.raises(ValueError, match=match):
    ae_lib.train(NB201Space(), tiny_config(**{field: value}), progress=False)


def test_space_without_architectures_is_a_clear_error():
  c = macro.default_config()
  c.input_shape = (4, 4, 1)  # two stride-2 layers reach 1x1; four are needed
  c.strides = (2,)
  c.min_layers = 4
  with pytest.raises(ValueError, match="no valid architecture"):
    ae_lib.train(MacroSpace(c), tiny_config(), progress=False)


def test_nb201_reconstructs_every_cell():
  space = NB201Space(nb201.default_config())
  config = tiny_config(latent_dim=8, hidden=128, steps=1200, batch_size=256)
  ae = ae_lib.train(space, config, progress=False)
  tokens = space.all_tokens()
  assert (ae.decode(ae.encode(tokens)) == tokens).all(axis=1).mean() >= 0.999
