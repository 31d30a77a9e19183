"""A search's workdir and its configuration: one search per workdir, resumed only with
the configuration that began it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_collections


class ConfigMismatchError(ValueError):
  """The workdir holds a search run with another configuration."""


# Fields that may change between runs of one search, at any depth: presentation
# (progress bars) and execution (resume a search begun on one machine with more
# workers, or on a cluster; export or not; where compiled programs are cached; how many
# seeds the finalists are retrained with, which adds retrainings and changes no search).
RESUME_IGNORED = (
  "progress",
  "executor",
  "export",
  "compilation_cache_dir",
  "final_seeds",
)


def _comparable(saved: Any, current: Any, defaults: Any) -> Any:
  """``saved`` as the current code reads it: a field added to nasq after the workdir
  was made (at any depth) counts as its default, and ``RESUME_IGNORED`` fields go."""
  if not isinstance(current, dict):
    return saved
  saved = saved if isinstance(saved, dict) else {}
  defaults = defaults if isinstance(defaults, dict) else {}
  out = {}
  for k in set(saved) | set(current):
    if k in RESUME_IGNORED:
      continue
    if k not in saved:
      if k not in defaults:
        continue  # not a field of this nasq: compared as absent on both sides
      out[k] = _comparable(defaults[k], current.get(k), defaults[k])
    else:
      out[k] = _comparable(saved[k], current.get(k), defaults.get(k))
  return out


def _without_ignored(tree: Any) -> Any:
  if not isinstance(tree, dict):
    return tree
  return {k: _without_ignored(v) for k, v in tree.items() if k not in RESUME_IGNORED}


def _changed_fields(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    return [
      f
      for k in sorted(set(a) | set(b))
      for f in _changed_fields(a.get(k), b.get(k), f"{prefix}{k}.")
    ]
  return [] if a == b else [prefix[:-1]]


def check_config(
  workdir: Path, config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict
) -> bool:
  """Refuses a workdir whose ``config.json`` is another search's; writes nothing.
  ``defaults``: the driver's default config, for fields added after the workdir was
  made. Returns whether the workdir already holds this search (a resume)."""
  path = workdir / "config.json"
  if not path.exists():
    return False
  current = json.loads(config.to_json_best_effort(sort_keys=True))
  defaults = json.loads(defaults.to_json_best_effort(sort_keys=True))
  saved = _comparable(json.loads(path.read_text()), current, defaults)
  changed = _changed_fields(saved, _without_ignored(current))
  if changed:
    raise ConfigMismatchError(
      f"{workdir} holds a search with another configuration (fields {changed} differ); "
      f"use a new --workdir, or the same config to resume"
    )
  return True


def write_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
  """Marks ``workdir`` as this search's (its ``config.json``), once."""
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / "config.json"
  if not path.exists():
    current = json.loads(config.to_json_best_effort(sort_keys=True))
    path.write_text(json.dumps(current, indent=1, sort_keys=True))
