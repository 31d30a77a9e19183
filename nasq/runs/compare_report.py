"""The strategy comparison's tables and plots (``compare.compare_strategies``):
``table.md``, ``results.json`` and ``curves_<setting>.png`` from the finished runs."""

from __future__ import annotations

import json
import multiprocessing
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from matplotlib.figure import Figure

from nasq.costs import Budget
from nasq.evaluators import TableEvaluator
from nasq.feasibility import all_costs
from nasq.spaces import SearchSpace

CHECKPOINTS = (10, 25, 50, 100, 150)


def write(
  workdir: Path,
  config: ml_collections.ConfigDict,
  results: list[dict[str, Any]],
  wall: float,
  table_eval: TableEvaluator,
  space: SearchSpace,
  setting_budget: Callable[[ml_collections.ConfigDict, SearchSpace, str], Budget],
) -> dict[str, Any]:
  """Per setting: each strategy's best-so-far at the checkpoints, regret, how often it
  found the table's best feasible cell, and its paired record against evolution."""
  summary: dict[str, Any] = {
    "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} CPUs",
    "wall_seconds": wall,
    "config": json.loads(config.to_json_best_effort()),
    "settings": {},
  }
  lines = [f"# Strategy comparison ({config.evaluator}, metric {config.metric})", ""]
  for setting in config.settings:
    budget = setting_budget(config, space, setting)
    feasible = None
    if setting != "unconstrained":
      by_arch = dict(
        zip(
          (a.to_string() for a in space.all_architectures()),
          all_costs(space),
          strict=True,
        )
      )
      feasible = lambda a, b=budget, c=by_arch: b.fits(c[a.to_string()])  # noqa: E731
    best_arch, best_value = table_eval.best(feasible)
    rows = {}
    k = min(100, config.num_queries)
    marks = [c for c in CHECKPOINTS if c <= config.num_queries]
    lines += [
      f"## {setting} (table best feasible: {best_value:.3f}, `{best_arch}`)",
      "",
      "| strategy | "
      + " | ".join(f"best @{c}" for c in marks)
      + f" | regret @{k} | found best | fallbacks | over budget / run "
      f"| vs evolution @{k} (W/T/L) |",
      "|---|" + "---|" * (len(marks) + 5),
    ]

    def runs(name, setting=setting):
      return sorted(
        (r for r in results if r["setting"] == setting and r["strategy"] == name),
        key=lambda r: r["seed"],
      )

    for name in config.strategies_to_run:
      curves = np.array([r["curve"] for r in runs(name)])
      fallbacks = sum(r["fallbacks"] for r in runs(name))
      proposals = max(1, sum(r["proposals"] for r in runs(name)))
      # Over-budget proposals per run (rows recorded before this count: unknown).
      over = [r["infeasible"] for r in runs(name) if "infeasible" in r]
      over_text = f"{np.mean(over):.1f}" if over else "-"
      paired = ""
      if name != "evolution" and "evolution" in config.strategies_to_run:
        other = np.array([r["curve"][k - 1] for r in runs("evolution")])
        mine = curves[:, k - 1]
        paired = (
          f"{int(np.sum(mine > other + 1e-9))}/{int(np.sum(np.isclose(mine, other)))}/"
          f"{int(np.sum(mine < other - 1e-9))}"
        )
      at = {
        c: (float(curves[:, c - 1].mean()), float(curves[:, c - 1].std()))
        for c in CHECKPOINTS
        if c <= config.num_queries
      }
      regret = best_value - curves[:, k - 1]
      found = float(np.mean(np.isclose(curves[:, -1], best_value)))
      rows[name] = {
        "best_at": at,
        "regret_at": {k: (float(regret.mean()), float(regret.std()))},
        "found_best_fraction": found,
        "fallback_fraction": fallbacks / proposals,
        "infeasible_per_run": float(np.mean(over)) if over else None,
        "wins_ties_losses_vs_evolution": paired,
        "seeds": len(curves),
        "mean_curve": curves.mean(0).tolist(),
      }
      lines.append(
        f"| {name} | "
        + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in at.values())
        + f" | {regret.mean():.3f} ± {regret.std():.3f} | {found:.0%} "
        f"| {fallbacks / proposals:.1%} | {over_text} | {paired or '-'} |"
      )
    lines.append("")
    summary["settings"][setting] = {"table_best": best_value, "strategies": rows}
    _plot(workdir / f"curves_{setting}.png", results, setting, config, best_value)
  read_back = [r for r in results if r.get("read_back")]
  lines.append(
    f"{config.num_seeds} seeds, {config.num_queries} queries ({config.num_initial} "
    f"shared random initial). Wall time {wall / 60:.1f} min on {summary['machine']} "
    f"for the {len(results) - len(read_back)} runs done now"
    + (
      f"; {len(read_back)} runs read back from the record, which took "
      f"{sum(r['seconds'] for r in read_back) / 60:.1f} min of worker time when run."
      if read_back
      else "."
    )
  )
  versions = sorted({r["code"] for r in results})
  summary["code"] = versions
  lines.append(
    f"Code version {', '.join(versions)}"
    + (f"; runs read back from {config.record}" if config.record else "")
    + "."
  )
  (workdir / "table.md").write_text("\n".join(lines) + "\n")
  (workdir / "results.json").write_text(json.dumps(summary, indent=1))
  return summary


def _plot(path: Path, results, setting, config, best_value) -> None:
  fig = Figure(figsize=(6.5, 4.5))
  ax = fig.subplots()
  for name in config.strategies_to_run:
    curves = np.array(
      [r["curve"] for r in results if r["setting"] == setting and r["strategy"] == name]
    )
    regret = best_value - curves
    mean = regret.mean(0)
    half = 1.96 * regret.std(0) / np.sqrt(len(curves))
    x = np.arange(1, curves.shape[1] + 1)
    ax.plot(x, mean, label=name)
    ax.fill_between(x, np.maximum(mean - half, 1e-3), mean + half, alpha=0.2)
  ax.set_yscale("log")
  ax.set_xlabel("queries")
  ax.set_ylabel(f"regret of {config.metric} (mean, 95% CI)")
  ax.set_title(f"{setting}: {config.num_seeds} seeds")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
