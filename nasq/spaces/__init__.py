"""Search spaces behind one protocol; ``make_space`` builds one from its config."""

from __future__ import annotations

import ml_collections

from nasq.spaces import macro, nb201
from nasq.spaces.base import Architecture, InvalidArchitectureError, SearchSpace
from nasq.spaces.macro import Layer, MacroArchitecture, MacroSpace
from nasq.spaces.nb201 import NB201Architecture, NB201Space

SPACES = {"macro": MacroSpace, "nb201": NB201Space}

__all__ = [
  "Architecture",
  "InvalidArchitectureError",
  "Layer",
  "MacroArchitecture",
  "MacroSpace",
  "NB201Architecture",
  "NB201Space",
  "SPACES",
  "SearchSpace",
  "default_config",
  "make_space",
  "macro",
  "nb201",
]


def default_config(name: str = "macro") -> ml_collections.ConfigDict:
  """The default config of space ``name``."""
  if name not in SPACES:
    raise ValueError(f"space.name must be one of {sorted(SPACES)}, got {name!r}")
  return {"macro": macro.default_config, "nb201": nb201.default_config}[name]()


def make_space(config: ml_collections.ConfigDict) -> MacroSpace | NB201Space:
  """Builds the space named by ``config.name``."""
  if config.name not in SPACES:
    raise ValueError(f"space.name must be one of {sorted(SPACES)}, got {config.name!r}")
  return SPACES[config.name](config)
