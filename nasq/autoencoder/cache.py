"""The on-disk cache of trained autoencoders, keyed by (space config, autoencoder config)."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from nasq import atomic
from nasq.autoencoder.config import AutoencoderConfig
from nasq.autoencoder.model import TrainedAutoencoder, build_model
from nasq.autoencoder.train import train
from nasq.spaces import SearchSpace, SpaceConfig

# Bump when the saved format or the model's structure changes: old caches are retrained.
FORMAT_VERSION = 1

logger = logging.getLogger(__name__)


class AutoencoderCacheError(ValueError):
  """A saved autoencoder that belongs to another space, config or format version."""


def _config_dict(config: Any) -> dict[str, Any]:
  """A frozen config dataclass as JSON data (tuples become lists)."""
  return json.loads(json.dumps(dataclasses.asdict(config), sort_keys=True))


def cache_key(space_config: SpaceConfig, config: AutoencoderConfig) -> str:
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


def cache_path(
  space: SearchSpace, config: AutoencoderConfig, cache_dir: str | Path
) -> Path:
  """Where ``load_or_train`` keeps the autoencoder of (space, config)."""
  return Path(cache_dir).expanduser() / f"{space.name}-{cache_key(space.config, config)}"


def save(ae: TrainedAutoencoder, path: str | Path) -> None:
  """Saves params (orbax) and metadata to directory ``path``, atomically
  (``atomic.atomic_directory``: a temporary name of its own, so two writers never share
  one, renamed into place; a failed save leaves nothing). Callers that may race on one
  ``path`` hold ``_locked(path)`` (``load_or_train`` does).
  """
  with atomic.atomic_directory(Path(path).absolute()) as tmp:
    _write(ae, tmp)


def _write(ae: TrainedAutoencoder, tmp: Path) -> None:
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp / "params", jax.device_get(ae.params))
  checkpointer.wait_until_finished()
  meta = {
    "format": FORMAT_VERSION,
    "key": cache_key(ae.space.config, ae.config),
    "space": _config_dict(ae.space.config),
    "autoencoder": _config_dict(ae.config),
    "target_mean": ae.target_mean.tolist(),
    "target_std": ae.target_std.tolist(),
    "predictor_rmse": ae.predictor_rmse.tolist(),
    "report": ae.report,
  }
  (tmp / "meta.json").write_text(json.dumps(meta, indent=1))


@contextlib.contextmanager
def _locked(path: Path):
  """An exclusive lock (``fcntl.flock`` on ``<path>.lock``) held for the block: one
  process trains and saves a cache entry while the others wait, then load it."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path.with_name(path.name + ".lock"), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def load(
  path: str | Path, space: SearchSpace, config: AutoencoderConfig | None = None
) -> TrainedAutoencoder:
  """Loads an autoencoder saved by ``save`` for ``space``.

  Raises:
    AutoencoderCacheError: the artifact was saved by another format version, for another
      space config, or (when ``config`` is given) with another autoencoder config.
    OSError, ValueError: the artifact is missing or unreadable.
  """
  path = Path(path).absolute()
  meta = json.loads((path / "meta.json").read_text())
  if meta.get("format") != FORMAT_VERSION:
    raise AutoencoderCacheError(
      f"{path} was saved by autoencoder format {meta.get('format')}; this nasq reads "
      f"format {FORMAT_VERSION}: retrain it"
    )
  if meta["space"] != _config_dict(space.config):
    raise AutoencoderCacheError(
      f"{path} was trained for space {meta['space']}, not for "
      f"{_config_dict(space.config)}"
    )
  if config is not None and meta["autoencoder"] != _config_dict(config):
    raise AutoencoderCacheError(
      f"{path} was trained with autoencoder config {meta['autoencoder']}, not "
      f"{_config_dict(config)}"
    )
  ae_config = AutoencoderConfig(
    **{  # JSON turns tuples into lists
      k: tuple(v) if isinstance(v, list) else v for k, v in meta["autoencoder"].items()
    }
  )
  model = build_model(space, ae_config)
  like = jax.eval_shape(
    model.init,
    jax.random.key(0),
    jnp.zeros((2, space.num_positions), jnp.int32),
    jnp.zeros((2, space.automaton.num_blocks), jnp.int32),
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
    {**meta.get("report", {}), "cache_path": str(path)},
  )


def load_or_train(
  space: SearchSpace,
  config: AutoencoderConfig,
  cache_dir: str | Path,
  *,
  progress: bool = True,
) -> TrainedAutoencoder:
  """The cached autoencoder for (space, autoencoder config), trained if missing.

  The cache entry is ``cache_path(space, config, cache_dir)``; a corrupt entry is
  retrained (with a warning) rather than loaded. Processes sharing a cache directory
  train one entry once: the first holds a lock while it trains and saves, the rest wait
  for it and load what it saved. A save that was killed midway leaves a temporary
  directory next to the entry; the next call removes it.
  """
  path = cache_path(space, config, cache_dir)
  with _locked(path):
    # Only the lock holder writes the entry, so no save of it is running now.
    for stale in atomic.remove_leftovers(path):
      logger.warning("removed %s, left by an interrupted save", stale)
    if path.exists():
      try:
        return load(path, space, config)
      except AutoencoderCacheError:
        raise
      except Exception as e:  # unreadable: retrain
        logger.warning("autoencoder cache %s is unreadable (%s); retraining", path, e)
    ae = train(space, config, progress=progress)
    save(ae, path)
  return dataclasses.replace(ae, report={**ae.report, "cache_path": str(path)})
