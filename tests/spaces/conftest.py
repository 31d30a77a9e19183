"""Fixtures of the space tests: tiny macro spaces and brute-force enumeration."""

import dataclasses
import itertools

import pytest

from nasq.spaces import MacroSpaceConfig

TINY = MacroSpaceConfig(
  input_shape=(4, 4, 1),
  min_layers=1,
  max_layers=3,
  ops=("conv3", "maxpool"),
  channels=(4, 8),
)


@pytest.fixture(scope="session")
def tiny_macro_config():
  """``tiny_macro_config(**overrides)``: a macro space of 4x4 images, 1-3 layers, two
  ops, two widths, small enough to enumerate."""
  return lambda **overrides: dataclasses.replace(TINY, **overrides)


@pytest.fixture(scope="session")
def brute_force_valid():
  """``brute_force_valid(space)``: every token vector of the space that decodes."""

  def enumerate_valid(space):
    ranges = [range(v) for v in space.vocab_sizes]
    return [t for t in itertools.product(*ranges) if space.is_valid(t)]

  return enumerate_valid
