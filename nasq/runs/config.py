"""The driver floor's one conversion: ``ml_collections`` sections <-> typed settings.

Below ``nasq/runs/`` every function takes frozen dataclasses (``TrainConfig``,
``DataConfig``, ``Budget``, ...), each declaring its fields, defaults and checks in one
place. A config file's section is built from those defaults (``to_config``) and turned
back into the dataclass (``from_config``) when a run starts, so a misspelled or unknown
field is an error naming it before anything runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ml_collections

from nasq.executors import ExecutorError
from nasq.spaces import SPACE_CONFIGS, SpaceConfig


def _placeholder_type(hint: Any) -> type:
  """The type a ``None``-default field takes when set (``float | None`` -> float)."""
  if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
    hint = next(a for a in typing.get_args(hint) if a is not type(None))
  return typing.get_origin(hint) or hint


def to_config(settings: Any) -> ml_collections.ConfigDict:
  """A config section holding the fields and values of a settings dataclass."""
  hints = typing.get_type_hints(type(settings))
  section = ml_collections.ConfigDict()
  for field in dataclasses.fields(settings):
    value = getattr(settings, field.name)
    if value is None:  # typed, so that the command line can set it
      value = ml_collections.config_dict.placeholder(_placeholder_type(hints[field.name]))
    section[field.name] = value
  return section


def _freeze(value: Any) -> Any:
  return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def from_config[T](
  cls: type[T], section: ml_collections.ConfigDict | dict[str, Any], name: str
) -> T:
  """The ``cls`` settings of config section ``name`` (a ConfigDict, or its JSON data);
  unknown fields are an error naming them."""
  values = (
    section.to_dict() if isinstance(section, ml_collections.ConfigDict) else section
  )
  known = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(values) - set(known))
  if unknown:
    raise ValueError(f"{name} has unknown fields {unknown}; accepted fields: {known}")
  return cls(**{k: _freeze(v) for k, v in values.items()})


def sibling_config(config_file: str, name: str) -> ml_collections.ConfigDict:
  """``get_config()`` of the config file ``name`` beside ``config_file`` (config files
  are loaded by path, not as a package, so one builds on another this way)."""
  path = Path(config_file).with_name(name)
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def space_from_config(section: ml_collections.ConfigDict) -> SpaceConfig:
  """The space config of a ``space`` section, by its ``name``."""
  if section.name not in SPACE_CONFIGS:
    raise ValueError(
      f"space.name must be one of {sorted(SPACE_CONFIGS)}, got {section.name!r}"
    )
  return from_config(SPACE_CONFIGS[section.name], section, "space")


class ConfigError(ValueError):
  """Something the user must fix: a config field, a budget, a workdir, missing data.
  An entry point prints it as one line, without a traceback."""


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
  """Re-raises, as ``ConfigError``, the errors a driver's checks raise for bad input:
  ``ValueError`` (each names its field and the accepted values), a missing file or
  dataset, an unreachable or too small cluster."""
  try:
    yield
  except ConfigError:
    raise
  except (ValueError, FileNotFoundError, ExecutorError) as e:
    raise ConfigError(str(e)) from e


def run_main[T](fn: Callable[..., T], *args: Any) -> T:
  """``fn(*args)`` for an entry point: a ``ConfigError`` ends the process with its
  message on one line and exit status 2; any other exception keeps its traceback."""
  try:
    return fn(*args)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None


__all__ = [
  "ConfigError",
  "from_config",
  "run_main",
  "space_from_config",
  "to_config",
  "user_errors",
]
