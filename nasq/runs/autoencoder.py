"""Trains (or loads) an architecture autoencoder and reports its quality
(``experiments/train_autoencoder.py``, ``configs/autoencoder.py``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from matplotlib.figure import Figure

from nasq import autoencoder as ae_lib
from nasq.runs.config import from_config, space_from_config, to_config, user_errors
from nasq.spaces import make_space, space_config


def default_config() -> ml_collections.ConfigDict:
  """The config of ``experiments/train_autoencoder.py`` (configs/autoencoder.py)."""
  config = ml_collections.ConfigDict()
  config.space = to_config(space_config("macro"))  # The search space to embed.
  config.autoencoder = to_config(ae_lib.AutoencoderConfig())  # Model and training.
  # Where trained autoencoders are kept, keyed by (space config, autoencoder config).
  config.cache_dir = "~/.cache/nasq/autoencoders"
  config.num_prior = 10_000  # Prior samples decoded for the validity report.
  config.num_uniform = 10_000  # Uniform draws from the space for the report (macro).
  return config


def plot_latent(
  ae: ae_lib.TrainedAutoencoder, holdout: ae_lib.ArchitectureData, path: Path
) -> None:
  """The held-out codes projected on their two principal axes, coloured by log10 params."""
  z = ae.encode(holdout.tokens)
  z = z - z.mean(axis=0)
  _, _, vt = np.linalg.svd(z, full_matrices=False)
  xy = z @ vt[:2].T
  fig = Figure(figsize=(6, 5))
  ax = fig.subplots()
  sc = ax.scatter(
    xy[:, 0], xy[:, 1], c=holdout.raw_targets[:, 0] / math.log(10), s=3, cmap="viridis"
  )
  fig.colorbar(sc, ax=ax, label="log10(params)")
  ax.set_xlabel("principal axis 1")
  ax.set_ylabel("principal axis 2")
  ax.set_title(
    f"{ae.space.name} latent space (d={ae.latent_dim}), {len(xy)} held-out architectures"
  )
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def format_report(report: dict[str, Any]) -> str:
  """The quality report as readable lines."""
  lines = []
  for name in ("holdout", "uniform"):
    if name in report:
      r = report[name]
      lines.append(
        f"exact reconstruction, {name} ({r['count']} architectures): {r['exact']:.2%}"
      )
      if "exact_by_depth" in r:
        by_depth = ", ".join(f"{d}: {v:.1%}" for d, v in r["exact_by_depth"].items())
        lines.append(f"  by depth: {by_depth}")
  p = report["prior"]
  lines.append(
    f"prior samples: {p['count']} decoded, {p['valid']:.2%} valid, {p['distinct']} distinct"
  )
  for name, r in report["predictor"].items():
    lines.append(
      f"predictor {name}: R^2 {r['r2']:.4f}, Spearman {r['spearman']:.4f}, "
      f"RMSE {r['rmse']:.4f}"
    )
  for name, r in report.get("predictor_at_prior", {}).items():
    lines.append(
      f"predictor {name} at prior samples vs their decoded architectures: "
      f"R^2 {r['r2']:.4f}, RMSE {r['rmse']:.4f}"
    )
  lines.append(
    f"predictor convexity: largest chord gap {report['predictor_convexity_max_gap']:.2e} "
    f"(<= 0 means convex)"
  )
  for step, r in report["locality"].items():
    lines.append(
      f"locality: step {step} -> {r['unchanged']:.1%} unchanged, "
      f"{r['mean_tokens_changed']:.2f} tokens changed on average"
    )
  for key in ("train_seconds", "data_seconds", "artifact_bytes"):
    if key in report:
      lines.append(
        f"{key}: {report[key]:.1f}" if "seconds" in key else f"{key}: {report[key]}"
      )
  return "\n".join(lines)


def train_and_report(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
  """Loads or trains the configured autoencoder, then writes its quality report.

  Writes ``workdir/autoencoder_report.json`` and ``workdir/latent.png``.
  """
  with user_errors():
    space = make_space(space_from_config(config.space))
    ae_config = from_config(ae_lib.AutoencoderConfig, config.autoencoder, "autoencoder")
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with user_errors():  # a cached autoencoder of another space or format
    ae = ae_lib.load_or_train(space, ae_config, config.cache_dir)
  _, holdout = ae_lib.training_data(
    space, ae.config, np.random.default_rng(ae.config.seed)
  )
  report = ae_lib.quality_report(
    ae, holdout, num_prior=config.num_prior, num_uniform=config.num_uniform
  )
  cache = ae_lib.cache_path(space, ae_config, config.cache_dir)
  report["cache_path"] = str(cache)
  report["artifact_bytes"] = sum(
    f.stat().st_size for f in cache.rglob("*") if f.is_file()
  )
  for key in ("train_seconds", "data_seconds", "num_train"):
    if key in ae.report:
      report[key] = ae.report[key]
  (workdir / "autoencoder_report.json").write_text(json.dumps(report, indent=1))
  plot_latent(ae, holdout, workdir / "latent.png")
  return report
