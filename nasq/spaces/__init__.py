"""Search spaces behind one protocol; ``make_space`` builds one from its config."""

from __future__ import annotations

import dataclasses

from nasq.spaces import macro, nb201
from nasq.spaces.base import Architecture, InvalidArchitectureError, SearchSpace, one_hot
from nasq.spaces.macro import Layer, MacroArchitecture, MacroSpace, MacroSpaceConfig
from nasq.spaces.nb201 import NB201Architecture, NB201Space, NB201SpaceConfig

SPACES = {"macro": MacroSpace, "nb201": NB201Space}
SPACE_CONFIGS = {"macro": MacroSpaceConfig, "nb201": NB201SpaceConfig}
SpaceConfig = MacroSpaceConfig | NB201SpaceConfig

__all__ = [
  "Architecture",
  "InvalidArchitectureError",
  "Layer",
  "MacroArchitecture",
  "MacroSpace",
  "MacroSpaceConfig",
  "NB201Architecture",
  "NB201Space",
  "NB201SpaceConfig",
  "SPACES",
  "SPACE_CONFIGS",
  "SearchSpace",
  "SpaceConfig",
  "make_space",
  "one_hot",
  "macro",
  "nb201",
  "space_config",
]


def space_config(name: str = "macro", **fields) -> SpaceConfig:
  """The config of space ``name``: its defaults, with ``fields`` replaced."""
  if name not in SPACE_CONFIGS:
    raise ValueError(f"space.name must be one of {sorted(SPACES)}, got {name!r}")
  return dataclasses.replace(SPACE_CONFIGS[name](), **fields)


def make_space(config: SpaceConfig) -> MacroSpace | NB201Space:
  """Builds the space named by ``config.name``."""
  if config.name not in SPACES:
    raise ValueError(f"space.name must be one of {sorted(SPACES)}, got {config.name!r}")
  return SPACES[config.name](config)
