"""NAS-Bench-201 cells (Dong & Yang, ICLR 2020) on the standard macro skeleton.

A cell is a DAG on 4 nodes; each of the 6 edges i -> j (i < j) carries one of five
operations. The canonical form is the standard string
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: group j lists the edges into node j, ``op~i``
naming the edge from node i. Tokens are the 6 op indices in that order, with the ops
indexed as in the benchmark's ``OPS`` list.

The skeleton (for building and costing): a 3x3 conv stem with ``stem_channels`` (16)
channels and BatchNorm; three stages of ``cells_per_stage`` (5) cells at 16, 32 and 64
channels, with a ResNet basic block (stride 2) between stages; BatchNorm + ReLU, global
average pooling and a linear classifier.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

import numpy as np

from nasq.spaces.base import (
  BlockAutomaton,
  InvalidArchitectureError,
  TokenSpace,
  build_automaton,
)

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Edge k of the token vector goes from node EDGES[k][0] to node EDGES[k][1].
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_NODES = 4


@dataclasses.dataclass(frozen=True)
class NB201Architecture:
  """One NAS-Bench-201 cell (ops in ``EDGES`` order) and its skeleton settings."""

  ops: tuple[str, ...]
  input_shape: tuple[int, int, int] = (32, 32, 3)
  num_classes: int = 10
  stem_channels: int = 16
  cells_per_stage: int = 5

  def to_string(self) -> str:
    groups, k = [], 0
    for j in range(1, NUM_NODES):
      groups.append("|" + "|".join(f"{self.ops[k + i]}~{i}" for i in range(j)) + "|")
      k += j
    return "+".join(groups)

  def edges(self) -> list[tuple[int, int, str]]:
    return [(i, j, op) for (i, j), op in zip(EDGES, self.ops, strict=True)]


@dataclasses.dataclass(frozen=True)
class NB201SpaceConfig:
  """The standard NAS-Bench-201 setting on CIFAR-10-sized inputs (the ``space`` section)."""

  name: str = "nb201"
  input_shape: tuple[int, ...] = (32, 32, 3)  # (height, width, channels) of the images.
  num_classes: int = 10  # Classifier outputs (10 for CIFAR-10, 100 for CIFAR-100).
  stem_channels: int = (
    16  # Channels of the stem and the first stage (16 in the benchmark).
  )
  cells_per_stage: int = 5  # Cells per stage (5 in the benchmark).


class NB201Space(TokenSpace):
  """All 5^6 = 15,625 NAS-Bench-201 cells; every token vector is valid."""

  name = "nb201"

  def __init__(self, config: NB201SpaceConfig | None = None):
    config = NB201SpaceConfig() if config is None else config
    self.config = config
    self.input_shape = tuple(int(v) for v in config.input_shape)
    if len(self.input_shape) != 3 or min(self.input_shape[:2]) < 4:
      raise ValueError(
        f"space.input_shape must be (height, width, channels) with "
        f"height, width >= 4 (two stride-2 stages), got "
        f"{tuple(config.input_shape)}"
      )
    self.num_classes = int(config.num_classes)
    if self.num_classes < 2:
      raise ValueError(f"space.num_classes must be >= 2, got {self.num_classes}")
    self.stem_channels = int(config.stem_channels)
    self.cells_per_stage = int(config.cells_per_stage)
    if self.stem_channels < 1 or self.cells_per_stage < 1:
      raise ValueError("space.stem_channels and space.cells_per_stage must be >= 1")

  @functools.cached_property
  def vocab_sizes(self) -> tuple[int, ...]:
    return (len(OPS),) * len(EDGES)

  def describe_position(self, position: int) -> str:
    i, j = EDGES[position]
    return f"edge {i}->{j}"

  def valid_mask(self, prefix: Sequence[int]) -> np.ndarray:
    if len(prefix) >= len(EDGES):
      raise IndexError(f"prefix of length {len(prefix)} is already complete")
    return np.ones(len(OPS), dtype=bool)

  def _build(self, tokens: tuple[int, ...]) -> NB201Architecture:
    return NB201Architecture(
      tuple(OPS[t] for t in tokens),
      self.input_shape,
      self.num_classes,
      self.stem_channels,
      self.cells_per_stage,
    )

  def encode(self, arch: NB201Architecture) -> np.ndarray:
    if (arch.input_shape, arch.num_classes, arch.stem_channels, arch.cells_per_stage) != (
      self.input_shape,
      self.num_classes,
      self.stem_channels,
      self.cells_per_stage,
    ):
      raise InvalidArchitectureError("architecture's skeleton differs from this space's")
    return np.asarray([OPS.index(op) for op in arch.ops], dtype=np.int32)

  def parse(self, text: str) -> NB201Architecture:
    """Parses the standard string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
    groups = text.strip().split("+")
    if len(groups) != NUM_NODES - 1:
      raise InvalidArchitectureError(
        f"NAS-Bench-201 string needs {NUM_NODES - 1} '+'-separated node groups, got "
        f"{text!r}"
      )
    ops = []
    for j, group in enumerate(groups, start=1):
      items = [s for s in group.split("|") if s]
      if len(items) != j:
        raise InvalidArchitectureError(f"node {j} needs {j} inputs, got {group!r}")
      for i, item in enumerate(items):
        m = re.fullmatch(r"(\w+)~(\d+)", item)
        if not m or int(m.group(2)) != i:
          raise InvalidArchitectureError(f"expected 'op~{i}' in node {j}, got {item!r}")
        if m.group(1) not in OPS:
          raise InvalidArchitectureError(
            f"unknown NAS-Bench-201 op {m.group(1)!r}; accepted values: {list(OPS)}"
          )
        ops.append(m.group(1))
    return self._build(tuple(OPS.index(op) for op in ops))

  def sample(self, rng: np.random.Generator) -> NB201Architecture:
    """Uniform over all 15,625 cells."""
    return self._build(tuple(int(t) for t in rng.integers(0, len(OPS), len(EDGES))))

  def count(self) -> int:
    return len(OPS) ** len(EDGES)

  @functools.cached_property
  def automaton(self) -> BlockAutomaton:
    """One block per edge; every op is valid everywhere."""
    return build_automaton(
      1, len(EDGES), None, lambda b, key: [((t,), None) for t in range(len(OPS))]
    )

  def sample_tokens(
    self,
    rng: np.random.Generator,
    n: int,
    distribution: str = "uniform",
    return_path: bool = False,
  ):
    """``n`` token vectors drawn uniformly (int32 [n, 6]); see ``MacroSpace``."""
    if distribution != "uniform":
      raise ValueError(f"distribution must be 'uniform' for nb201, got {distribution!r}")
    a = self.automaton
    return a.sample_weighted(rng, n, a.option_weights, return_path)

  def all_tokens(self) -> np.ndarray:
    """Every cell's tokens, in base-5 order (int32 [15625, 6])."""
    grid = np.stack(np.meshgrid(*[np.arange(len(OPS))] * len(EDGES), indexing="ij"), -1)
    return grid.reshape(-1, len(EDGES)).astype(np.int32)

  def all_architectures(self) -> list[NB201Architecture]:
    """Every cell of the space, in token (base-5) order."""
    return [self._build(tuple(t)) for t in self.all_tokens().tolist()]
