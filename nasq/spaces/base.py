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


@runtime_checkable
class Architecture(Protocol):
  """An immutable, hashable description of one network."""

  def to_string(self) -> str: ...


@runtime_checkable
class SearchSpace(Protocol):
  """What every search space provides."""

  name: str

  @property
  def vocab_sizes(self) -> tuple[int, ...]:
    """Number of choices at each token position."""
    ...

  def valid_mask(self, prefix: Sequence[int]) -> np.ndarray:
    """Boolean mask over the choices at position ``len(prefix)``."""
    ...

  def sample(self, rng: np.random.Generator) -> Any: ...

  def encode(self, arch: Any) -> np.ndarray: ...

  def decode(self, tokens: Sequence[int]) -> Any: ...

  def parse(self, text: str) -> Any: ...

  def is_valid(self, tokens: Sequence[int]) -> bool: ...

  def mutate(self, arch: Any, rng: np.random.Generator) -> Any: ...


class TokenSpace:
  """Shared implementation of validity checking and mutation over ``valid_mask``.

  Subclasses define ``vocab_sizes``, ``valid_mask``, ``encode``, ``_build`` (tokens that
  passed the mask check -> architecture) and ``parse``.
  """

  name: str = "abstract"

  @property
  def vocab_sizes(self) -> tuple[int, ...]:
    raise NotImplementedError

  @property
  def num_positions(self) -> int:
    return len(self.vocab_sizes)

  def valid_mask(self, prefix: Sequence[int]) -> np.ndarray:
    raise NotImplementedError

  def _build(self, tokens: tuple[int, ...]) -> Any:
    raise NotImplementedError

  def encode(self, arch: Any) -> np.ndarray:
    raise NotImplementedError

  def parse(self, text: str) -> Any:
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

  def decode(self, tokens: Sequence[int]) -> Any:
    """Strict inverse of ``encode``: raises ``InvalidArchitectureError`` if invalid."""
    return self._build(self.check_tokens(tokens))

  def is_valid(self, tokens: Sequence[int]) -> bool:
    try:
      self.check_tokens(tokens)
    except InvalidArchitectureError:
      return False
    return True

  def sample_tokens_by_mask(self, rng: np.random.Generator) -> tuple[int, ...]:
    """Samples each position uniformly among its valid choices (not uniform overall)."""
    tokens: list[int] = []
    for _ in range(self.num_positions):
      tokens.append(int(rng.choice(np.flatnonzero(self.valid_mask(tokens)))))
    return tuple(tokens)

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

  def mutate(self, arch: Any, rng: np.random.Generator) -> Any:
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
