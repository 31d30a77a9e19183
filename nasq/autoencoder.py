"""The architecture autoencoder: a Wasserstein autoencoder over a space's token vectors.

As in LBQ-NAS, whole architectures are embedded in a small continuous latent space where
the search runs. Three parts are trained jointly on architectures sampled from the space
(no image data):

* **Encoder**: token vector -> latent point ``z`` (deterministic, as in a WAE). Tokens are
  embedded per position, concatenated and mapped by an MLP.
* **Decoder**: autoregressive over the space's blocks (a layer of the macro space, an edge
  of a NAS-Bench-201 cell). Block ``b`` is predicted from ``z``, a summary of the blocks
  already decoded (the sum of their embeddings) and the block's position. It scores every
  *valid* option of the block in the current state of the space's ``BlockAutomaton`` (the
  sum of per-token logits), so decoding is valid by construction: every latent point maps
  to an architecture of the space. The reconstruction loss is the cross-entropy over those
  same valid options.
* **Cost predictor**: a fully input convex neural network (FICNN, Amos, Xu & Kolter 2017)
  on ``z`` predicting standardized log(params) and log(MACs). Convex in ``z``, so a budget
  on its prediction is a convex region of the latent space; its loss shapes the latent
  space as in the paper.

The latent codes are pulled towards the N(0, I) prior by an MMD penalty with the inverse
multiquadratic kernel over several scales (Tolstikhin et al. 2018).

A trained autoencoder is cached in ``cache_dir`` under a key derived from the space config
and the autoencoder config (see ``load_or_train``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nasq.costs import compute_costs, macro_costs_batch
from nasq.spaces import make_space
from nasq.spaces.base import BlockAutomaton
from nasq.spaces.macro import MacroSpace

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any

# Bump when the saved format or the model's structure changes: old caches are retrained.
FORMAT_VERSION = 1
TARGETS = ("log_params", "log_macs")

logger = logging.getLogger(__name__)


def default_config() -> ml_collections.ConfigDict:
  """The default autoencoder (see experiments/train_autoencoder.py)."""
  c = ml_collections.ConfigDict()
  # Dimension of the latent space the search runs in. The default macro space holds
  # 4e22 architectures (about 75 bits): 16 dimensions reconstruct only ~90% of held-out
  # networks exactly, 32 reach the 99% target (README, "Autoencoder").
  c.latent_dim = 32
  c.embed_dim = 32  # Token embedding size (encoder) and prefix summary size (decoder).
  c.hidden = 256  # Width of the encoder and decoder MLPs.
  c.encoder_layers = 2  # Hidden layers of the encoder MLP.
  # "mlp": z = MLP(token embeddings). "additive": z = sum of per-position latent
  # embeddings, and the decoder also sees the part of z its decoded prefix explains.
  c.encoder = "additive"
  c.decoder_layers = 2  # Hidden layers of the decoder MLP.
  c.predictor_hidden = (128, 128)  # Hidden widths of the convex cost predictor.
  c.mmd_weight = 10.0  # lambda of the MMD penalty (the WAE paper's value).
  # IMQ kernel scales, as multiples of 2 * latent_dim (the WAE paper's set).
  c.mmd_scales = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
  c.predictor_weight = 10.0  # Weight of the cost predictor's squared error.
  # Training architectures: "depth_uniform" (macro: every depth equally often) or
  # "uniform" over the space. NAS-Bench-201 always trains on all 15,625 cells.
  c.distribution = "depth_uniform"
  c.num_train = 200_000  # Architectures sampled for training (macro).
  c.num_holdout = 10_000  # Held-out architectures for the quality report (macro).
  c.batch_size = 256
  c.steps = 6000  # Optimizer steps.
  c.learning_rate = 2e-3  # Peak of a warmup-cosine schedule (Adam).
  c.warmup_steps = 200
  c.seed = 0
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ValueError`` naming the first bad field."""
  positive = ("latent_dim", "embed_dim", "hidden", "batch_size", "steps", "num_train")
  for field in positive:
    if int(config[field]) < 1:
      raise ValueError(f"autoencoder.{field} must be >= 1, got {config[field]}")
  for field in ("encoder_layers", "decoder_layers", "num_holdout", "warmup_steps"):
    if int(config[field]) < 0:
      raise ValueError(f"autoencoder.{field} must be >= 0, got {config[field]}")
  for field in ("mmd_weight", "predictor_weight"):
    if float(config[field]) < 0:
      raise ValueError(f"autoencoder.{field} must be >= 0, got {config[field]}")
  if not config.predictor_hidden or min(config.predictor_hidden) < 1:
    raise ValueError(
      f"autoencoder.predictor_hidden must be a non-empty tuple of positive widths, got "
      f"{config.predictor_hidden}"
    )
  if config.encoder not in ("mlp", "additive"):
    raise ValueError(
      f"autoencoder.encoder must be one of ['mlp', 'additive'], got {config.encoder!r}"
    )
  if config.distribution not in ("uniform", "depth_uniform"):
    raise ValueError(
      f"autoencoder.distribution must be one of ['uniform', 'depth_uniform'], got "
      f"{config.distribution!r}"
    )


# --- model ------------------------------------------------------------------------------


def _mlp(x: Array, width: int, layers: int, out: int, name: str) -> Array:
  for i in range(layers):
    x = nn.relu(nn.Dense(width, name=f"{name}_{i}")(x))
  return nn.Dense(out, name=f"{name}_out")(x)


def _nonneg_init(key: PRNGKey, shape: Sequence[int], dtype=jnp.float32) -> Array:
  # softplus(raw) starts near 1 / fan_in, so the hidden path starts at a moderate scale.
  target = 1.0 / shape[0]
  raw = math.log(math.expm1(target))
  return raw + 0.1 * jax.random.normal(key, shape, dtype)


class NonNegDense(nn.Module):
  """A dense layer whose kernel is non-negative (softplus of a free parameter)."""

  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    raw = self.param("raw_kernel", _nonneg_init, (x.shape[-1], self.features))
    return x @ jax.nn.softplus(raw)


class FICNN(nn.Module):
  """A fully input convex network (Amos, Xu & Kolter 2017) with ``outputs`` heads.

  ``h_1 = softplus(W_0 z + b_0)``, ``h_{k+1} = softplus(A_k h_k + W_k z + b_k)`` with
  ``A_k >= 0``, and each output ``a^T h_K + w^T z + b`` with ``a >= 0``. Softplus is convex
  and non-decreasing and non-negative combinations of convex functions are convex, so
  every output is convex in ``z``.
  """

  hidden: Sequence[int]
  outputs: int

  @nn.compact
  def __call__(self, z: Array) -> Array:
    h = jax.nn.softplus(nn.Dense(self.hidden[0], name="input_0")(z))
    for i, width in enumerate(self.hidden[1:], start=1):
      h = jax.nn.softplus(
        NonNegDense(width, name=f"hidden_{i}")(h) + nn.Dense(width, name=f"input_{i}")(z)
      )
    return NonNegDense(self.outputs, name="hidden_out")(h) + nn.Dense(
      self.outputs, name="input_out"
    )(z)


class ArchitectureAutoencoder(nn.Module):
  """Encoder, block-autoregressive decoder and convex cost predictor (module docstring).

  Every method takes the automaton state of each block (``states`` [n, B]) besides the
  tokens: it is a function of the tokens, computed outside (``BlockAutomaton.path``).

  Encoders:
    * ``"additive"``: ``z = sum_b g(state_b, block_b)`` with ``g`` an MLP. Once blocks
      ``< b`` are decoded, their share of ``z`` is known exactly, and the decoder also
      sees the unexplained rest ``z - sum_{b' < b} g(...)``: it only has to read block
      ``b`` (and the blocks after it) out of that rest.
    * ``"mlp"``: ``z = MLP(concatenated token embeddings)``.
  """

  vocab_sizes: tuple[int, ...]
  block_size: int
  num_states: int
  latent_dim: int
  embed_dim: int
  hidden: int
  encoder_layers: int
  decoder_layers: int
  predictor_hidden: tuple[int, ...]
  encoder: str = "additive"
  num_targets: int = len(TARGETS)

  @property
  def num_blocks(self) -> int:
    return len(self.vocab_sizes) // self.block_size

  @property
  def max_vocab(self) -> int:
    return max(self.vocab_sizes)

  @property
  def prefix_dim(self) -> int:
    """Size of the running summary of decoded blocks."""
    return self.embed_dim + (self.latent_dim if self.encoder == "additive" else 0)

  def setup(self):
    total = sum(self.vocab_sizes)
    self.offsets = np.concatenate([[0], np.cumsum(self.vocab_sizes)[:-1]]).astype(
      np.int32
    )
    self.encoder_embed = nn.Embed(total, self.embed_dim)
    self.encoder_state_embed = nn.Embed(self.num_states, self.embed_dim)
    self.decoder_embed = nn.Embed(total, self.embed_dim)
    self.decoder_state_embed = nn.Embed(self.num_states, self.embed_dim)
    self.block_position = nn.Embed(self.num_blocks, self.embed_dim)
    self.encoder_hidden = [
      nn.Dense(self.hidden, name=f"encoder_{i}") for i in range(self.encoder_layers)
    ]
    self.encoder_out = nn.Dense(self.latent_dim)
    self.decoder_hidden = [
      nn.Dense(self.hidden, name=f"decoder_{i}") for i in range(self.decoder_layers)
    ]
    self.decoder_out = nn.Dense(self.block_size * self.max_vocab)
    self.predictor = FICNN(self.predictor_hidden, self.num_targets)

  def __call__(self, tokens: Array, states: Array) -> tuple[Array, Array, Array]:
    """Teacher-forced pass: (z, block logits [n, B, block_size, V], predictions)."""
    n = tokens.shape[0]
    blocks = jnp.broadcast_to(jnp.arange(self.num_blocks), (n, self.num_blocks))
    ids = (tokens + self.offsets).reshape(n, self.num_blocks, self.block_size)
    update = self.decoder_embed(ids).sum(axis=-2)
    if self.encoder == "additive":
      shares = self._share(ids, states)  # computed once for z and the prefixes
      z = shares.sum(axis=1)
      update = jnp.concatenate([update, shares], axis=-1)
    else:
      z = self.encode(tokens, states)
    prefix = jnp.cumsum(update, axis=1) - update  # the blocks before each block
    zb = jnp.broadcast_to(z[:, None, :], (n, self.num_blocks, z.shape[-1]))
    return z, self.block_logits(zb, prefix, states, blocks), self.predict(z)

  def _block_token_ids(self, block_tokens: Array, block: Array) -> Array:
    idx = block[..., None] * self.block_size + jnp.arange(self.block_size)
    return block_tokens + jnp.asarray(self.offsets)[idx]

  def _share(self, ids: Array, state: Array) -> Array:
    """g(state, block): one block's additive share of z. ids [..., block_size]."""
    x = jnp.concatenate(
      [self.encoder_embed(ids).sum(axis=-2), self.encoder_state_embed(state)], axis=-1
    )
    for layer in self.encoder_hidden:
      x = nn.relu(layer(x))
    return self.encoder_out(x)

  def encode(self, tokens: Array, states: Array) -> Array:
    n = tokens.shape[0]
    if self.encoder == "additive":
      ids = (tokens + self.offsets).reshape(n, self.num_blocks, self.block_size)
      return self._share(ids, states).sum(axis=1)
    x = self.encoder_embed(tokens + self.offsets).reshape(n, -1)
    for layer in self.encoder_hidden:
      x = nn.relu(layer(x))
    return self.encoder_out(x)

  def predict(self, z: Array) -> Array:
    """Standardized (log params, log MACs) predicted from ``z``: convex in ``z``."""
    return self.predictor(z)

  def prefix_update(self, block_tokens: Array, state: Array, block: Array) -> Array:
    """What decoding ``block_tokens`` in ``state`` adds to the prefix summary."""
    ids = self._block_token_ids(block_tokens, block)
    parts = [self.decoder_embed(ids).sum(axis=-2)]
    if self.encoder == "additive":
      parts.append(self._share(ids, state))
    return jnp.concatenate(parts, axis=-1)

  def block_logits(self, z: Array, prefix: Array, state: Array, block: Array) -> Array:
    """Per-token logits [..., block_size, V] of the block at index ``block``."""
    parts = [z, prefix, self.decoder_state_embed(state), self.block_position(block)]
    if self.encoder == "additive":  # the part of z the decoded prefix leaves unexplained
      parts.append(z - prefix[..., self.embed_dim :])
    x = jnp.concatenate(parts, axis=-1)
    for layer in self.decoder_hidden:
      x = nn.relu(layer(x))
    x = self.decoder_out(x)
    return x.reshape(*x.shape[:-1], self.block_size, self.max_vocab)


def option_scores(logits: Array, options: Array, valid: Array) -> Array:
  """Log-probabilities of each option [..., O] (invalid ones -inf).

  Args:
    logits: [..., block_size, V] per-token logits of a block.
    options: [..., O, block_size] the options' tokens.
    valid: [..., O] which options are real.
  """
  block_size, vocab = logits.shape[-2:]
  flat = logits.reshape(*logits.shape[:-2], block_size * vocab)
  # Index of (token j, value v) in the flattened block: j * V + v.
  options = jnp.asarray(options, jnp.int32)
  idx = options + vocab * jnp.arange(block_size, dtype=jnp.int32)
  lead = idx.shape[:-2]
  per_token = jnp.take_along_axis(flat, idx.reshape(*lead, -1), axis=-1).reshape(
    idx.shape
  )  # [..., O, block_size]
  score = jnp.where(valid, per_token.sum(-1), -jnp.inf)
  return jax.nn.log_softmax(score, axis=-1)


# --- losses -----------------------------------------------------------------------------


def mmd_imq(z: Array, prior: Array, scales: Sequence[float]) -> Array:
  """Unbiased MMD^2 between samples ``z`` and ``prior`` with a sum of IMQ kernels.

  ``k(x, y) = C / (C + |x - y|^2)`` with ``C = 2 * d * s`` for each scale ``s``, as in
  the WAE paper's code (the prior's expected squared distance is ``2 d``).
  """
  n, d = z.shape

  def gram(a, b):
    dist = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T
    dist = jnp.maximum(dist, 0.0)
    return sum(2 * d * s / (2 * d * s + dist) for s in scales)

  off = 1.0 - jnp.eye(n)
  kzz = (gram(z, z) * off).sum() / (n * (n - 1))
  kpp = (gram(prior, prior) * off).sum() / (n * (n - 1))
  kzp = gram(z, prior).mean()
  return kzz + kpp - 2 * kzp


@dataclasses.dataclass(frozen=True)
class TrainingTables:
  """Device-side arrays the loss needs: automaton tables."""

  options: Array  # [S, O, block_size]
  valid: Array  # [S, O]
  next_state: Array  # [S, O]
  start: int

  @classmethod
  def from_automaton(cls, a: BlockAutomaton) -> TrainingTables:
    return cls(
      jnp.asarray(a.options),
      jnp.asarray(a.option_valid),
      jnp.asarray(a.next_state),
      a.start,
    )


def loss_fn(
  params: PyTree,
  batch: dict[str, Array],
  prior: Array,
  *,
  model: ArchitectureAutoencoder,
  tables: TrainingTables,
  config: ml_collections.ConfigDict,
) -> tuple[Array, dict[str, Array]]:
  """Reconstruction CE over valid options + lambda * MMD + predictor squared error."""
  states = batch["states"]  # [n, B]
  z, logits, pred = model.apply(params, batch["tokens"], states)
  logp = option_scores(logits, tables.options[states], tables.valid[states])
  target = jnp.take_along_axis(logp, batch["choice"][..., None], axis=-1)[..., 0]
  recon = -target.sum(axis=1).mean()
  mmd = mmd_imq(z, prior, tuple(config.mmd_scales))
  pred_err = jnp.mean((pred - batch["targets"]) ** 2)
  loss = recon + config.mmd_weight * mmd + config.predictor_weight * pred_err
  correct = (jnp.argmax(logp, axis=-1) == batch["choice"]).all(axis=1)
  return loss, {
    "loss": loss,
    "recon": recon,
    "mmd": mmd,
    "predictor_mse": pred_err,
    "batch_exact": correct.mean(),
  }


# --- decoding ---------------------------------------------------------------------------


def greedy_decode(
  params: PyTree, z: Array, *, model: ArchitectureAutoencoder, tables: TrainingTables
) -> Array:
  """Decodes latent points [n, d] to valid token vectors [n, P] (best option per block)."""
  n = z.shape[0]

  def step(carry, block):
    state, prefix = carry
    blocks = jnp.full(state.shape, block)
    logits = model.apply(params, z, prefix, state, blocks, method=model.block_logits)
    logp = option_scores(logits, tables.options[state], tables.valid[state])
    choice = jnp.argmax(logp, axis=-1)
    block_tokens = tables.options[state, choice]
    prefix = prefix + model.apply(
      params, block_tokens, state, blocks, method=model.prefix_update
    )
    return (tables.next_state[state, choice], prefix), block_tokens

  init = (
    jnp.full((n,), tables.start, dtype=jnp.int32),
    jnp.zeros((n, model.prefix_dim), z.dtype),
  )
  _, blocks = jax.lax.scan(step, init, jnp.arange(model.num_blocks))
  return jnp.transpose(blocks, (1, 0, 2)).reshape(n, -1)


# --- data -------------------------------------------------------------------------------


def architecture_targets(
  space: Any, tokens: np.ndarray, states: np.ndarray, choices: np.ndarray
) -> np.ndarray:
  """[n, 2] float64: log(params) and log(MACs) of each token vector (exact costs)."""
  if isinstance(space, MacroSpace):
    params, macs = macro_costs_batch(space, states, choices)
  else:
    costs = [compute_costs(a) for a in space.decode_many(tokens)]
    params = np.array([c.params for c in costs], np.float64)
    macs = np.array([c.macs for c in costs], np.float64)
  return np.stack([np.log(params), np.log(np.maximum(macs, 1.0))], axis=1)


@dataclasses.dataclass
class ArchitectureData:
  """Token vectors with everything the loss needs, and the target standardization."""

  tokens: np.ndarray
  states: np.ndarray
  choice: np.ndarray
  raw_targets: np.ndarray  # unstandardized log(params), log(MACs)

  def batch_arrays(self, mean: np.ndarray, std: np.ndarray) -> dict[str, Array]:
    return {
      "tokens": jnp.asarray(self.tokens),
      "states": jnp.asarray(self.states),
      "choice": jnp.asarray(self.choice),
      "targets": jnp.asarray((self.raw_targets - mean) / std, jnp.float32),
    }


def make_data(
  space: Any,
  tokens: np.ndarray,
  states: np.ndarray | None = None,
  choices: np.ndarray | None = None,
) -> ArchitectureData:
  """Validates ``tokens`` (unless their automaton path is given) and computes targets."""
  if states is None or choices is None:
    states, choices = space.automaton.path(tokens)
  targets = architecture_targets(space, tokens, states, choices)
  return ArchitectureData(tokens, states, choices, targets)


def training_data(
  space: Any, config: ml_collections.ConfigDict, rng: np.random.Generator
) -> tuple[ArchitectureData, ArchitectureData]:
  """(train, holdout). NAS-Bench-201: all cells, and the held-out set is all cells too.

  Macro: ``num_train + num_holdout`` draws from ``config.distribution``; the first
  ``num_holdout`` are held out and every training draw equal to one of them is dropped.
  """
  if space.name == "nb201":
    everything = make_data(space, space.all_tokens())
    return everything, everything
  n = int(config.num_train) + int(config.num_holdout)
  tokens, states, choices = space.sample_tokens(
    rng, n, config.distribution, return_path=True
  )
  h = int(config.num_holdout)
  seen = {t.tobytes() for t in tokens[:h]}
  keep = h + np.flatnonzero([t.tobytes() not in seen for t in tokens[h:]])
  holdout = make_data(space, tokens[:h], states[:h], choices[:h])
  return make_data(space, tokens[keep], states[keep], choices[keep]), holdout


# --- training ---------------------------------------------------------------------------


def build_model(space: Any, config: ml_collections.ConfigDict) -> ArchitectureAutoencoder:
  return ArchitectureAutoencoder(
    vocab_sizes=tuple(int(v) for v in space.vocab_sizes),
    block_size=space.automaton.block_size,
    num_states=space.automaton.num_states,
    latent_dim=int(config.latent_dim),
    embed_dim=int(config.embed_dim),
    hidden=int(config.hidden),
    encoder_layers=int(config.encoder_layers),
    decoder_layers=int(config.decoder_layers),
    predictor_hidden=tuple(int(h) for h in config.predictor_hidden),
    encoder=str(config.encoder),
  )


@dataclasses.dataclass
class TrainedAutoencoder:
  """A trained autoencoder bound to its space, with array-level helpers."""

  space: Any
  config: ml_collections.ConfigDict
  model: ArchitectureAutoencoder
  params: PyTree
  target_mean: np.ndarray  # standardization of (log params, log MACs)
  target_std: np.ndarray
  # Held-out RMSE of the predictor per target, in log units (predictive spread).
  predictor_rmse: np.ndarray
  report: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.tables = TrainingTables.from_automaton(self.space.automaton)
    self._encode = jax.jit(
      lambda p, t, s: self.model.apply(p, t, s, method=self.model.encode)
    )
    self._decode = jax.jit(
      functools.partial(greedy_decode, model=self.model, tables=self.tables)
    )
    self._predict = jax.jit(
      lambda p, z: self.model.apply(p, z, method=self.model.predict)
    )

  @property
  def latent_dim(self) -> int:
    return self.model.latent_dim

  def encode(self, tokens: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Latent points [n, d] of token vectors [n, P]."""
    tokens = np.asarray(tokens, np.int32).reshape(-1, self.space.num_positions)
    states = self.space.automaton.state_path(tokens)  # raises on invalid tokens
    both = np.concatenate([tokens, states], axis=1)
    p = self.space.num_positions
    return _batched(
      lambda x: self._encode(self.params, x[:, :p], x[:, p:]), both, batch_size
    )

  def decode(self, z: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Valid token vectors [n, P] of latent points [n, d]."""
    z = np.asarray(z, np.float32).reshape(-1, self.latent_dim)
    return _batched(lambda x: self._decode(self.params, x), z, batch_size)

  def predict_log_costs(self, z: np.ndarray) -> np.ndarray:
    """[n, 2]: predicted log(params), log(MACs) (natural log) of latent points."""
    z = jnp.asarray(np.asarray(z, np.float32).reshape(-1, self.latent_dim))
    return np.asarray(self._predict(self.params, z)) * self.target_std + self.target_mean

  def predict_fn(self) -> Callable[[Array], Array]:
    """A pure function z [..., d] -> log(params), log(MACs) [..., 2], for jitted code."""
    params, mean, std = (
      self.params,
      jnp.asarray(self.target_mean),
      jnp.asarray(self.target_std),
    )
    model = self.model
    return lambda z: model.apply(params, z, method=model.predict) * std + mean


def _batched(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
  outs = []
  for i in range(0, len(x), batch_size):
    chunk = x[i : i + batch_size]
    pad = batch_size - len(chunk) if len(x) > batch_size else 0
    if pad:  # keep one compiled shape
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
    out = np.asarray(fn(jnp.asarray(chunk)))
    outs.append(out[: len(out) - pad])
  return np.concatenate(outs) if outs else np.zeros((0,))


def train(
  space: Any,
  config: ml_collections.ConfigDict,
  *,
  progress: bool = True,
  log_every: int = 100,
) -> TrainedAutoencoder:
  """Trains an autoencoder on architectures of ``space`` and measures its quality."""
  from tqdm.auto import tqdm

  validate_config(config)
  a = space.automaton
  if a.completions[a.start] < 1:
    raise ValueError(
      f"space {space.name!r} has no valid architecture: no sequence of choices satisfies "
      f"its rules (check its input_shape, strides and min_layers)"
    )
  start = time.perf_counter()
  rng = np.random.default_rng(config.seed)
  train_data, holdout = training_data(space, config, rng)
  mean = train_data.raw_targets.mean(0)
  std = train_data.raw_targets.std(0) + 1e-6
  data = train_data.batch_arrays(mean, std)
  data_seconds = time.perf_counter() - start

  model = build_model(space, config)
  tables = TrainingTables.from_automaton(space.automaton)
  key = jax.random.key(config.seed)
  key, init_key = jax.random.split(key)
  params = model.init(init_key, data["tokens"][:2], data["states"][:2])
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, config.learning_rate, int(config.warmup_steps), int(config.steps)
  )
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
  opt_state = tx.init(params)
  grad_fn = jax.value_and_grad(
    functools.partial(loss_fn, model=model, tables=tables, config=config), has_aux=True
  )
  n, bs = len(train_data.tokens), int(config.batch_size)

  def one_step(carry, step_key):
    params, opt_state = carry
    idx_key, prior_key = jax.random.split(step_key)
    idx = jax.random.randint(idx_key, (bs,), 0, n)
    batch = jax.tree.map(lambda a: a[idx], data)
    prior = jax.random.normal(prior_key, (bs, model.latent_dim))
    (_, metrics), grads = grad_fn(params, batch, prior)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), metrics

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def run_chunk(params, opt_state, key):
    keys = jax.random.split(key, log_every)
    (params, opt_state), metrics = jax.lax.scan(one_step, (params, opt_state), keys)
    return params, opt_state, jax.tree.map(jnp.mean, metrics)

  history = []
  steps = int(config.steps)
  bar = tqdm(total=steps, desc="autoencoder", disable=not progress, unit="step")
  for step in range(0, steps, log_every):
    key, chunk_key = jax.random.split(key)
    params, opt_state, metrics = run_chunk(params, opt_state, chunk_key)
    metrics = {k: float(v) for k, v in metrics.items()}
    history.append({"step": step + log_every, **metrics})
    bar.update(log_every)
    bar.set_postfix(
      recon=f"{metrics['recon']:.3f}",
      exact=f"{metrics['batch_exact']:.3f}",
      mmd=f"{metrics['mmd']:.4f}",
      pred=f"{metrics['predictor_mse']:.4f}",
    )
    if not math.isfinite(metrics["loss"]):
      bar.close()
      raise FloatingPointError(
        f"autoencoder training diverged at step {step + log_every}: {metrics}"
      )
  bar.close()
  train_seconds = time.perf_counter() - start - data_seconds

  ae = TrainedAutoencoder(space, config, model, params, mean, std, np.zeros(2))
  z = ae.encode(holdout.tokens)
  pred = ae.predict_log_costs(z)
  ae.predictor_rmse = np.sqrt(np.mean((pred - holdout.raw_targets) ** 2, axis=0))
  ae.report = {
    "num_train": int(len(train_data.tokens)),
    "data_seconds": data_seconds,
    "train_seconds": train_seconds,
    "final_metrics": history[-1],
  }
  ae.history = history
  return ae


# --- quality ----------------------------------------------------------------------------


def r_squared(pred: np.ndarray, true: np.ndarray) -> float:
  return float(1.0 - np.sum((pred - true) ** 2) / np.sum((true - true.mean()) ** 2))


def convexity_violation(
  fn: Callable[[Array], Array], key: PRNGKey, dim: int, num_chords: int = 2000
) -> float:
  """Largest ``f(t a + (1-t) b) - (t f(a) + (1-t) f(b))`` over random chords (<= 0 if
  convex), maximized over outputs; endpoints drawn from N(0, 4 I)."""
  ka, kb, kt = jax.random.split(key, 3)
  a = 2.0 * jax.random.normal(ka, (num_chords, dim))
  b = 2.0 * jax.random.normal(kb, (num_chords, dim))
  t = jax.random.uniform(kt, (num_chords, 1))
  gap = fn(t * a + (1 - t) * b) - (t * fn(a) + (1 - t) * fn(b))
  return float(jnp.max(gap))


def reconstruction(ae: TrainedAutoencoder, tokens: np.ndarray) -> dict[str, Any]:
  """Exact reconstruction rate of ``tokens`` (and per depth for the macro space)."""
  decoded = ae.decode(ae.encode(tokens))
  exact = (decoded == tokens).all(axis=1)
  out: dict[str, Any] = {"count": int(len(tokens)), "exact": float(exact.mean())}
  if isinstance(ae.space, MacroSpace):
    f = ae.space.fields_per_layer
    depth = (tokens.reshape(len(tokens), -1, f)[:, :, 0] != 0).sum(axis=1)
    out["exact_by_depth"] = {
      int(d): float(exact[depth == d].mean()) for d in np.unique(depth)
    }
  return out


def quality_report(
  ae: TrainedAutoencoder,
  holdout: ArchitectureData,
  *,
  num_prior: int = 10_000,
  num_uniform: int = 10_000,
  seed: int = 1,
) -> dict[str, Any]:
  """Everything the autoencoder is judged by, as a JSON-able dict.

  * reconstruction of the held-out architectures (and, for the macro space, of
    ``num_uniform`` architectures drawn uniformly from the whole space);
  * ``num_prior`` latent points drawn from N(0, I): valid decodes (checked by the space's
    own token rules, independently of the decoder's automaton) and distinct ones;
  * the cost predictor on the held-out set: R^2, Spearman, RMSE per target;
  * convexity of the trained predictor along random chords;
  * locality: how many tokens change when a held-out code is moved by a small step.
  """
  from scipy import stats

  rng = np.random.default_rng(seed)
  report: dict[str, Any] = {"holdout": reconstruction(ae, holdout.tokens)}
  if isinstance(ae.space, MacroSpace) and num_uniform:
    uniform = ae.space.sample_tokens(rng, num_uniform, "uniform")
    report["uniform"] = reconstruction(ae, uniform)

  z_prior = rng.standard_normal((num_prior, ae.latent_dim)).astype(np.float32)
  decoded = ae.decode(z_prior)
  valid = [ae.space.is_valid(t) for t in decoded]
  report["prior"] = {
    "count": num_prior,
    "valid": float(np.mean(valid)),
    "distinct": len({t.tobytes() for t in decoded}),
  }
  # What the search relies on: the predictor at a latent point against the exact cost
  # of the architecture that point decodes to.
  exact = make_data(ae.space, decoded).raw_targets
  at_prior = ae.predict_log_costs(z_prior)
  report["predictor_at_prior"] = {
    name: {
      "r2": r_squared(at_prior[:, i], exact[:, i]),
      "rmse": float(np.sqrt(np.mean((at_prior[:, i] - exact[:, i]) ** 2))),
    }
    for i, name in enumerate(TARGETS)
  }

  z = ae.encode(holdout.tokens)
  pred = ae.predict_log_costs(z)
  report["predictor"] = {
    name: {
      "r2": r_squared(pred[:, i], holdout.raw_targets[:, i]),
      "spearman": float(stats.spearmanr(pred[:, i], holdout.raw_targets[:, i])[0]),
      "rmse": float(np.sqrt(np.mean((pred[:, i] - holdout.raw_targets[:, i]) ** 2))),
    }
    for i, name in enumerate(TARGETS)
  }
  report["predictor_convexity_max_gap"] = convexity_violation(
    ae.predict_fn(), jax.random.key(seed), ae.latent_dim
  )

  locality = {}
  sub = z[: min(len(z), 2000)]
  base = ae.decode(sub)
  for step in (0.05, 0.1, 0.25, 0.5):
    moved = ae.decode(sub + step * rng.standard_normal(sub.shape).astype(np.float32))
    locality[str(step)] = {
      "unchanged": float((moved == base).all(axis=1).mean()),
      "mean_tokens_changed": float((moved != base).sum(axis=1).mean()),
    }
  report["locality"] = locality
  report["z_mean_abs"] = float(np.abs(z.mean(axis=0)).mean())
  report["z_std_mean"] = float(z.std(axis=0).mean())
  return report


def plot_latent(ae: TrainedAutoencoder, holdout: ArchitectureData, path: Path) -> None:
  """The held-out codes projected on their two principal axes, coloured by log10 params."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  z = ae.encode(holdout.tokens)
  z = z - z.mean(axis=0)
  _, _, vt = np.linalg.svd(z, full_matrices=False)
  xy = z @ vt[:2].T
  fig, ax = plt.subplots(figsize=(6, 5))
  sc = ax.scatter(
    xy[:, 0], xy[:, 1], c=holdout.raw_targets[:, 0] / math.log(10), s=3, cmap="viridis"
  )
  fig.colorbar(sc, ax=ax, label="log10(params)")
  ax.set_xlabel("principal axis 1")
  ax.set_ylabel("principal axis 2")
  ax.set_title(
    f"{ae.space.name} latent space (d={ae.latent_dim}), {len(xy)} held-out architectures"
  )
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# --- caching ----------------------------------------------------------------------------


class AutoencoderCacheError(ValueError):
  """A saved autoencoder that belongs to another space, config or format version."""


def _config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def cache_key(
  space_config: ml_collections.ConfigDict, config: ml_collections.ConfigDict
) -> str:
  """A key that changes with the space config, the autoencoder config or the format."""
  blob = json.dumps(
    {
      "format": FORMAT_VERSION,
      "space": _config_dict(space_config),
      "autoencoder": _config_dict(config),
    },
    sort_keys=True,
  )
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save(ae: TrainedAutoencoder, path: str | Path, space_config) -> None:
  """Saves params (orbax) and metadata to directory ``path``, atomically."""
  import orbax.checkpoint as ocp

  path = Path(path).absolute()
  tmp = path.with_name(path.name + ".tmp")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp / "params", jax.device_get(ae.params))
  checkpointer.wait_until_finished()
  meta = {
    "format": FORMAT_VERSION,
    "key": cache_key(space_config, ae.config),
    "space": _config_dict(space_config),
    "autoencoder": _config_dict(ae.config),
    "target_mean": ae.target_mean.tolist(),
    "target_std": ae.target_std.tolist(),
    "predictor_rmse": ae.predictor_rmse.tolist(),
    "report": ae.report,
  }
  (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
  shutil.rmtree(path, ignore_errors=True)
  tmp.rename(path)


def load(
  path: str | Path,
  space_config: ml_collections.ConfigDict,
  config: ml_collections.ConfigDict | None = None,
) -> TrainedAutoencoder:
  """Loads an autoencoder saved by ``save`` for the space ``space_config``.

  Raises:
    AutoencoderCacheError: the artifact was saved by another format version, for another
      space config, or (when ``config`` is given) with another autoencoder config.
    OSError, ValueError: the artifact is missing or unreadable.
  """
  import orbax.checkpoint as ocp

  path = Path(path).absolute()
  meta = json.loads((path / "meta.json").read_text())
  if meta.get("format") != FORMAT_VERSION:
    raise AutoencoderCacheError(
      f"{path} was saved by autoencoder format {meta.get('format')}; this nasq reads "
      f"format {FORMAT_VERSION}: retrain it"
    )
  if meta["space"] != _config_dict(space_config):
    raise AutoencoderCacheError(
      f"{path} was trained for space {meta['space']}, not for {_config_dict(space_config)}"
    )
  ae_config = ml_collections.ConfigDict(meta["autoencoder"])
  if config is not None and meta["autoencoder"] != _config_dict(config):
    raise AutoencoderCacheError(
      f"{path} was trained with autoencoder config {meta['autoencoder']}, not "
      f"{_config_dict(config)}"
    )
  for field, value in ae_config.items():  # JSON turns tuples into lists
    if isinstance(value, list):
      ae_config[field] = tuple(value)
  space = make_space(space_config)
  model = build_model(space, ae_config)
  a = space.automaton
  like = jax.eval_shape(
    model.init,
    jax.random.key(0),
    jnp.zeros((2, space.num_positions), jnp.int32),
    jnp.zeros((2, a.num_blocks), jnp.int32),
  )
  params = ocp.StandardCheckpointer().restore(path / "params", like)
  return TrainedAutoencoder(
    space,
    ae_config,
    model,
    params,
    np.asarray(meta["target_mean"]),
    np.asarray(meta["target_std"]),
    np.asarray(meta["predictor_rmse"]),
    meta.get("report", {}),
  )


def load_or_train(
  space_config: ml_collections.ConfigDict,
  config: ml_collections.ConfigDict,
  cache_dir: str | Path,
  *,
  progress: bool = True,
) -> TrainedAutoencoder:
  """The cached autoencoder for (space config, autoencoder config), trained if missing.

  The cache entry is ``cache_dir/<space>-<key>``; a corrupt entry is retrained (with a
  warning) rather than loaded.
  """
  validate_config(config)
  space = make_space(space_config)
  path = Path(cache_dir).expanduser() / f"{space.name}-{cache_key(space_config, config)}"
  if path.exists():
    try:
      return load(path, space_config, config)
    except AutoencoderCacheError:
      raise
    except Exception as e:  # unreadable: retrain
      logger.warning("autoencoder cache %s is unreadable (%s); retraining", path, e)
  ae = train(space, config, progress=progress)
  save(ae, path, space_config)
  ae.report["cache_path"] = str(path)
  return ae


# --- entry point ------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
  """The quality report as readable lines."""
  lines = []
  for name in ("holdout", "uniform"):
    if name in report:
      r = report[name]
      lines.append(
        f"exact reconstruction, {name} ({r['count']} architectures): {r['exact']:.2%}"
      )
      if "exact_by_depth" in r:
        by_depth = ", ".join(f"{d}: {v:.1%}" for d, v in r["exact_by_depth"].items())
        lines.append(f"  by depth: {by_depth}")
  p = report["prior"]
  lines.append(
    f"prior samples: {p['count']} decoded, {p['valid']:.2%} valid, {p['distinct']} distinct"
  )
  for name, r in report["predictor"].items():
    lines.append(
      f"predictor {name}: R^2 {r['r2']:.4f}, Spearman {r['spearman']:.4f}, "
      f"RMSE {r['rmse']:.4f}"
    )
  for name, r in report.get("predictor_at_prior", {}).items():
    lines.append(
      f"predictor {name} at prior samples vs their decoded architectures: "
      f"R^2 {r['r2']:.4f}, RMSE {r['rmse']:.4f}"
    )
  lines.append(
    f"predictor convexity: largest chord gap {report['predictor_convexity_max_gap']:.2e} "
    f"(<= 0 means convex)"
  )
  for step, r in report["locality"].items():
    lines.append(
      f"locality: step {step} -> {r['unchanged']:.1%} unchanged, "
      f"{r['mean_tokens_changed']:.2f} tokens changed on average"
    )
  for key in ("train_seconds", "data_seconds", "artifact_bytes"):
    if key in report:
      lines.append(
        f"{key}: {report[key]:.1f}" if "seconds" in key else f"{key}: {report[key]}"
      )
  return "\n".join(lines)


def experiment_config() -> ml_collections.ConfigDict:
  """The config of ``experiments/train_autoencoder.py`` (configs/autoencoder.py)."""
  from nasq import spaces

  config = ml_collections.ConfigDict()
  config.space = spaces.default_config("macro")  # The search space to embed.
  config.autoencoder = default_config()  # Model and training.
  # Where trained autoencoders are kept, keyed by (space config, autoencoder config).
  config.cache_dir = "~/.cache/nasq/autoencoders"
  config.num_prior = 10_000  # Prior samples decoded for the validity report.
  config.num_uniform = 10_000  # Uniform draws from the space for the report (macro).
  return config


def train_and_report(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
  """Loads or trains the configured autoencoder, then writes its quality report.

  Writes ``workdir/autoencoder_report.json`` and ``workdir/latent.png``.
  """
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  ae = load_or_train(config.space, config.autoencoder, config.cache_dir)
  space = ae.space
  _, holdout = training_data(space, ae.config, np.random.default_rng(ae.config.seed))
  report = quality_report(
    ae, holdout, num_prior=config.num_prior, num_uniform=config.num_uniform
  )
  cache = Path(config.cache_dir).expanduser() / (
    f"{space.name}-{cache_key(config.space, config.autoencoder)}"
  )
  report["cache_path"] = str(cache)
  report["artifact_bytes"] = sum(
    f.stat().st_size for f in cache.rglob("*") if f.is_file()
  )
  for key in ("train_seconds", "data_seconds", "num_train"):
    if key in ae.report:
      report[key] = ae.report[key]
  (workdir / "autoencoder_report.json").write_text(json.dumps(report, indent=1))
  plot_latent(ae, holdout, workdir / "latent.png")
  return report
