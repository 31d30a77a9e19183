"""The autoencoder's modules, automaton-masked decoding and the trained artifact.

See the package docstring for the design. ``TrainedAutoencoder`` binds a trained model
to its space and gives array-level encode / decode / cost prediction.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasq.autoencoder.config import TARGETS, AutoencoderConfig
from nasq.spaces import SearchSpace
from nasq.spaces.base import BlockAutomaton

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any


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


def build_model(space: SearchSpace, config: AutoencoderConfig) -> ArchitectureAutoencoder:
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


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedAutoencoder:
  """A trained autoencoder bound to its space, with array-level helpers. Built complete
  by ``train`` or ``load``; its compiled functions are made on first use."""

  space: SearchSpace
  config: AutoencoderConfig
  model: ArchitectureAutoencoder
  params: PyTree
  target_mean: np.ndarray  # standardization of (log params, log MACs)
  target_std: np.ndarray
  # Held-out RMSE of the predictor per target, in log units (predictive spread).
  predictor_rmse: np.ndarray
  report: dict[str, Any] = dataclasses.field(default_factory=dict)
  # Training curve, one entry per logged chunk (empty for a loaded autoencoder).
  history: tuple[dict[str, float], ...] = ()

  @functools.cached_property
  def tables(self) -> TrainingTables:
    return TrainingTables.from_automaton(self.space.automaton)

  @functools.cached_property
  def _encode(self) -> Callable:
    return jax.jit(lambda p, t, s: self.model.apply(p, t, s, method=self.model.encode))

  @functools.cached_property
  def _decode(self) -> Callable:
    return jax.jit(functools.partial(greedy_decode, model=self.model, tables=self.tables))

  @functools.cached_property
  def _predict(self) -> Callable:
    return jax.jit(lambda p, z: self.model.apply(p, z, method=self.model.predict))

  @property
  def latent_dim(self) -> int:
    return self.model.latent_dim

  def with_params(self, params: PyTree, **fields: Any) -> TrainedAutoencoder:
    """The same autoencoder with other weights (a fine-tuned copy), sharing this one's
    compiled encode, decode and predict functions (they take the weights as an
    argument), so a copy costs no compilation."""
    copy = dataclasses.replace(self, params=params, **fields)
    for name in ("tables", "_encode", "_decode", "_predict"):
      copy.__dict__[name] = getattr(self, name)
    return copy

  @functools.cached_property
  def fingerprint(self) -> str:
    """A hash of the trained weights and cost standardization: two autoencoders with
    one fingerprint encode, decode and predict alike (the same config trained on
    another machine need not: XLA's CPU code differs by instruction set)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(self.params)[0]:
      digest.update(jax.tree_util.keystr(path).encode())
      digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    for a in (self.target_mean, self.target_std):
      digest.update(np.asarray(a, np.float64).tobytes())
    return digest.hexdigest()[:12]

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
  """``fn`` over chunks of ``x``, each padded (repeating its last row) to ``batch_size``
  or, for smaller inputs, to the next power of two from 16: a handful of compiled
  shapes whatever the sizes asked for."""
  outs = []
  for i in range(0, len(x), batch_size):
    chunk = x[i : i + batch_size]
    size = min(batch_size, max(16, 1 << (len(chunk) - 1).bit_length()))
    pad = size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
    out = np.asarray(fn(jnp.asarray(chunk)))
    outs.append(out[: len(out) - pad])
  return np.concatenate(outs) if outs else np.zeros((0,))
