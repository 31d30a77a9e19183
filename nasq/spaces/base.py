"""The SearchSpace protocol and the token machinery shared by every space.

An architecture has a canonical token form: a fixed-length vector of integers, one
categorical choice per position, ``0 <= tokens[p] < vocab_sizes[p]``. Validity is
*prefix-decidable*: ``valid_mask(prefix)`` says which choices at the next position can
still be completed into a valid architecture. Sampling, strict decoding, mutation and
(later) the autoencoder's masked decoding all rest on that one function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


class InvalidArchitectureError(ValueError):
  """A token vector or string that is not an architecture of the space."""


def one_hot(tokens: Any, vocab_sizes: Sequence[int]) -> np.ndarray:
  """Token vectors [n, P] as one one-hot block per position: [n, sum(vocab_sizes)]."""
  t = np.asarray(tokens, np.int64).reshape(-1, len(vocab_sizes))
  return np.concatenate(
    [np.eye(v, dtype=np.float32)[t[:, i]] for i, v in enumerate(vocab_sizes)], axis=1
  )


@runtime_checkable
class Architecture(Protocol):
  """An immutable, hashable description of one network."""

  def to_string(self) -> str: ...


@runtime_checkable
class SearchSpace(Protocol):
  """What every search space provides: the members the rest of nasq uses."""

  name: str
  config: Any  # the frozen dataclass the space was built from (its cache identity)
  input_shape: tuple[int, ...]  # (height, width, channels) of the images
  num_classes: int
  exportable: bool  # its networks export to LiteRT and ONNX (nasq.export)

  @property
  def vocab_sizes(self) -> tuple[int, ...]:
    """Number of choices at each token position."""
    ...

  @property
  def num_positions(self) -> int: ...

  @property
  def automaton(self) -> BlockAutomaton:
    """The space's validity rules over blocks of tokens (sampling, masked decoding)."""
    ...

  def valid_mask(self, prefix: Sequence[int]) -> np.ndarray:
    """Boolean mask over the choices at position ``len(prefix)``."""
    ...

  def sample_tokens(
    self,
    rng: np.random.Generator,
    n: int,
    distribution: str = "uniform",
    return_path: bool = False,
  ) -> Any:
    """``n`` valid token vectors [n, P] (with their automaton path if asked)."""
    ...

  def encode(self, arch: Architecture) -> np.ndarray: ...

  def decode(self, tokens: Sequence[int]) -> Architecture: ...

  def decode_many(self, tokens: np.ndarray) -> list[Architecture]: ...

  def parse(self, text: str) -> Architecture: ...

  def is_valid(self, tokens: Sequence[int]) -> bool: ...

  def mutate(self, arch: Architecture, rng: np.random.Generator) -> Architecture: ...


class TokenSpace:
  """Shared implementation of validity checking and mutation over ``valid_mask``.

  Subclasses define ``vocab_sizes``, ``valid_mask``, ``encode``, ``_build`` (tokens that
  passed the mask check -> architecture) and ``parse``.
  """

  name: str = "abstract"
  exportable: bool = False

  @property
  def vocab_sizes(self) -> tuple[int, ...]:
    raise NotImplementedError

  @property
  def num_positions(self) -> int:
    return len(self.vocab_sizes)

  def valid_mask(self, prefix: Sequence[int]) -> np.ndarray:
    raise NotImplementedError

  def _build(self, tokens: tuple[int, ...]) -> Architecture:
    raise NotImplementedError

  def encode(self, arch: Architecture) -> np.ndarray:
    raise NotImplementedError

  def parse(self, text: str) -> Architecture:
    raise NotImplementedError

  def check_tokens(self, tokens: Sequence[int]) -> tuple[int, ...]:
    """Returns the tokens as a tuple of ints, or raises naming the first bad position."""
    tokens = tuple(int(t) for t in np.asarray(tokens).reshape(-1))
    if len(tokens) != self.num_positions:
      raise InvalidArchitectureError(
        f"{self.name}: expected {self.num_positions} tokens, got {len(tokens)}"
      )
    for p, t in enumerate(tokens):
      if not 0 <= t < self.vocab_sizes[p]:
        raise InvalidArchitectureError(
          f"{self.name}: token {t} at position {p} ({self.describe_position(p)}) is "
          f"out of range [0, {self.vocab_sizes[p]})"
        )
      mask = self.valid_mask(tokens[:p])
      if not mask[t]:
        allowed = np.flatnonzero(mask).tolist()
        raise InvalidArchitectureError(
          f"{self.name}: token {t} at position {p} ({self.describe_position(p)}) is "
          f"not valid after the preceding tokens; accepted values there: {allowed}"
        )
    return tokens

  def describe_position(self, position: int) -> str:
    return f"position {position}"

  def decode(self, tokens: Sequence[int]) -> Architecture:
    """Strict inverse of ``encode``: raises ``InvalidArchitectureError`` if invalid."""
    return self._build(self.check_tokens(tokens))

  def decode_many(self, tokens: np.ndarray) -> list[Architecture]:
    """Strict ``decode`` of a batch [n, P], validated at once by the space's automaton."""
    tokens = np.asarray(tokens, dtype=np.int32).reshape(-1, self.num_positions)
    self.automaton.state_path(tokens)  # raises on the first invalid row
    return [self._build(tuple(t)) for t in tokens.tolist()]

  def is_valid(self, tokens: Sequence[int]) -> bool:
    try:
      self.check_tokens(tokens)
    except InvalidArchitectureError:
      return False
    return True

  def complete(
    self, prefix: Sequence[int], suffix_hint: Sequence[int], rng: np.random.Generator
  ) -> tuple[int, ...]:
    """Extends ``prefix`` to a valid token vector, keeping ``suffix_hint`` where valid.

    The repair rule used by mutation: each later position keeps its old choice when that
    choice is still valid after the new prefix, and otherwise takes a uniformly random
    valid choice.
    """
    tokens = [int(t) for t in prefix]
    for p in range(len(tokens), self.num_positions):
      mask = self.valid_mask(tokens)
      hint = int(suffix_hint[p])
      tokens.append(hint if mask[hint] else int(rng.choice(np.flatnonzero(mask))))
    return tuple(tokens)

  def mutate(self, arch: Architecture, rng: np.random.Generator) -> Architecture:
    """Changes one token to another valid choice, then repairs the rest (``complete``).

    The result always differs from ``arch`` (canonical tokens differ at the changed
    position). Positions with a single valid choice are never picked.
    """
    tokens = tuple(int(t) for t in self.encode(arch))
    candidates = [
      p for p in range(self.num_positions) if int(self.valid_mask(tokens[:p]).sum()) > 1
    ]
    if not candidates:
      raise InvalidArchitectureError(f"{self.name}: architecture has no mutable position")
    p = int(rng.choice(candidates))
    mask = self.valid_mask(tokens[:p]).copy()
    mask[tokens[p]] = False
    new = int(rng.choice(np.flatnonzero(mask)))
    return self.decode(self.complete(tokens[:p] + (new,), tokens, rng))


class BlockAutomaton:
  """A space's validity rules as a finite automaton over blocks of tokens.

  The token vector is cut into ``num_blocks`` blocks of ``block_size`` tokens (a layer
  of the macro space, one edge of a NAS-Bench-201 cell). Each state lists the complete
  blocks that are valid there (``options``, padded; ``option_valid`` says which are real)
  and the state each one leads to. Every path of ``num_blocks`` valid options from
  ``start`` spells a valid architecture and every valid architecture is such a path, so
  the automaton gives array-shaped validity for jitted decoding and vectorized, exactly
  uniform sampling.

  Attributes:
    block_size: tokens per block.
    num_blocks: blocks per token vector.
    options: int32 [S, O, block_size], the token tuple of option o in state s.
    option_valid: bool [S, O].
    next_state: int32 [S, O], the state after option o (0 after the last block).
    start: the state at block 0.
    state_keys: per state, the space's key for it (e.g. the input shape of a layer).
    completions: float64 [S], the number of valid ways to finish from state s.
  """

  def __init__(
    self,
    block_size: int,
    num_blocks: int,
    options: np.ndarray,
    option_valid: np.ndarray,
    next_state: np.ndarray,
    state_block: np.ndarray,
    start: int = 0,
    state_keys: Sequence[Any] = (),
  ):
    self.block_size = int(block_size)
    self.num_blocks = int(num_blocks)
    self.options = np.asarray(options, dtype=np.int32)
    self.option_valid = np.asarray(option_valid, dtype=bool)
    self.next_state = np.asarray(next_state, dtype=np.int32)
    self.state_block = np.asarray(state_block, dtype=np.int32)
    self.start = int(start)
    self.state_keys = tuple(state_keys)  # the space's own description of each state
    counts = np.zeros(len(self.options), dtype=np.float64)
    for b in range(self.num_blocks - 1, -1, -1):
      for s in np.flatnonzero(self.state_block == b):
        if b == self.num_blocks - 1:
          counts[s] = float(self.option_valid[s].sum())
        else:
          counts[s] = float(counts[self.next_state[s][self.option_valid[s]]].sum())
    self.completions = counts

  @property
  def num_states(self) -> int:
    return len(self.options)

  def option_weights(self, s: np.ndarray, block: int) -> np.ndarray:
    """Unnormalized uniform-sampling weights of the options of states ``s``."""
    if block == self.num_blocks - 1:
      return self.option_valid[s].astype(np.float64)
    return np.where(self.option_valid[s], self.completions[self.next_state[s]], 0.0)

  def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` token vectors drawn exactly uniformly from the space (int32 [n, P])."""
    return self.sample_weighted(rng, n, self.option_weights)

  def sample_weighted(
    self, rng: np.random.Generator, n: int, weights_fn, return_path: bool = False
  ):
    """Samples block by block with ``weights_fn(states, block) -> [n, O]`` weights.

    Returns the token vectors [n, P], or with ``return_path`` also the state at each
    block [n, B] and the option chosen there [n, B].
    """
    state = np.full(n, self.start, dtype=np.int32)
    out = np.zeros((n, self.num_blocks, self.block_size), dtype=np.int32)
    states = np.zeros((n, self.num_blocks), dtype=np.int32)
    choices = np.zeros((n, self.num_blocks), dtype=np.int32)
    for b in range(self.num_blocks):
      states[:, b] = state
      w = weights_fn(state, b)
      cdf = np.cumsum(w, axis=1)
      if not (cdf[:, -1] > 0).all():
        raise ValueError(f"no valid option with positive weight at block {b}")
      u = rng.random(n) * cdf[:, -1]
      choice = np.minimum((cdf <= u[:, None]).sum(axis=1), w.shape[1] - 1)
      out[:, b] = self.options[state, choice]
      choices[:, b] = choice
      state = self.next_state[state, choice]
    if return_path:
      return out.reshape(n, -1), states, choices
    return out.reshape(n, -1)

  def state_path(self, tokens: np.ndarray) -> np.ndarray:
    """The state at each block of each token vector (int32 [n, num_blocks]).

    Raises ``InvalidArchitectureError`` if a row is not a valid token vector.
    """
    return self.path(tokens)[0]

  def path(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(state [n, B], chosen option [n, B]) along each token vector.

    Raises ``InvalidArchitectureError`` if a row is not a valid token vector.
    """
    tokens = np.asarray(tokens, dtype=np.int32).reshape(
      -1, self.num_blocks, self.block_size
    )
    n = len(tokens)
    state = np.full(n, self.start, dtype=np.int32)
    path = np.zeros((n, self.num_blocks), dtype=np.int32)
    chosen = np.zeros((n, self.num_blocks), dtype=np.int32)
    for b in range(self.num_blocks):
      path[:, b] = state
      match = (self.options[state] == tokens[:, b, None, :]).all(-1) & self.option_valid[
        state
      ]
      bad = ~match.any(axis=1)
      if bad.any():
        raise InvalidArchitectureError(
          f"token vector {int(np.flatnonzero(bad)[0])} has an invalid block {b}"
        )
      chosen[:, b] = match.argmax(axis=1)
      state = self.next_state[state, chosen[:, b]]
    return path, chosen


def build_automaton(
  block_size: int,
  num_blocks: int,
  start_key: Any,
  options_fn,
) -> BlockAutomaton:
  """Builds a ``BlockAutomaton`` by breadth-first search over hashable state keys.

  Args:
    block_size: tokens per block.
    num_blocks: blocks per token vector.
    start_key: the key of the state at block 0.
    options_fn: ``(block, key) -> [(block_tokens, next_key), ...]``.
  """
  keys: dict[tuple[int, Any], int] = {(0, start_key): 0}
  frontier = [(0, start_key)]
  table: list[list[tuple[tuple[int, ...], int]]] = []
  blocks: list[int] = []
  state_keys: list[Any] = []
  while frontier:
    nxt_frontier = []
    for b, key in frontier:
      row = []
      for block_tokens, next_key in options_fn(b, key):
        if b + 1 < num_blocks:
          k = (b + 1, next_key)
          if k not in keys:
            keys[k] = len(keys)
            nxt_frontier.append(k)
          row.append((tuple(block_tokens), keys[k]))
        else:
          row.append((tuple(block_tokens), 0))
      table.append(row)
      blocks.append(b)
      state_keys.append(key)
    frontier = nxt_frontier
  width = max(len(r) for r in table)
  options = np.zeros((len(table), width, block_size), dtype=np.int32)
  valid = np.zeros((len(table), width), dtype=bool)
  nxt = np.zeros((len(table), width), dtype=np.int32)
  for s, row in enumerate(table):
    for o, (block_tokens, k) in enumerate(row):
      options[s, o], valid[s, o], nxt[s, o] = block_tokens, True, k
  return BlockAutomaton(
    block_size, num_blocks, options, valid, nxt, blocks, 0, state_keys
  )
