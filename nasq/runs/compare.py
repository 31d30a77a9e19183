"""Strategy comparison on a benchmark table: same evaluator, same budget, many seeds.

``compare_strategies(config, workdir)`` (``experiments/benchmarks/strategies.py``,
``configs/bench_nb201.py``) runs every strategy in ``config.strategies_to_run``
for ``config.num_seeds`` seeds and ``config.num_queries`` evaluations, in each setting
(unconstrained, and under a parameter budget), through the same ``run_strategy`` loop as
the real search. Seed s gives every strategy the same initial design. Each run keeps its
own history under the workdir, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import platform
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from nasq import autoencoder as ae_lib
from nasq import evaluators, executors, strategies
from nasq.costs import Budget, compute_costs
from nasq.feasibility import all_costs
from nasq.history import History
from nasq.loop import run_strategy
from nasq.runs.config import from_config, space_from_config, to_config, user_errors
from nasq.spaces import SearchSpace, make_space, space_config

CHECKPOINTS = (10, 25, 50, 100, 150)
SETTINGS = ("unconstrained", "budget")


def make_evaluator(
  config: ml_collections.ConfigDict, space: SearchSpace | None = None
) -> evaluators.Evaluator:
  """The configured table evaluator; with ``eval_seconds`` > 0 each lookup also keeps a
  core busy that long (``FixedCostEvaluator``)."""
  table = make_table(config, space)
  seconds = float(config.eval_seconds)
  return evaluators.FixedCostEvaluator(table, seconds) if seconds > 0 else table


def make_table(
  config: ml_collections.ConfigDict, space: SearchSpace | None = None
) -> evaluators.TableEvaluator:
  space = make_space(space_from_config(config.space)) if space is None else space
  if config.evaluator == "analognas":
    return evaluators.TableEvaluator(
      evaluators.load_analognas_bench(), config.metric, space
    )
  if config.evaluator == "table":
    return evaluators.TableEvaluator.from_file(config.table_path, config.metric, space)
  raise ValueError(
    f"evaluator must be one of ['analognas', 'table'], got {config.evaluator!r}"
  )


def _setting_budget(
  config: ml_collections.ConfigDict, space: SearchSpace, setting: str
) -> Budget:
  if setting == "unconstrained":
    return Budget()
  if setting == "budget":
    largest = max(c["params"] for c in all_costs(space))  # cached per space
    return Budget(params=config.params_budget_fraction * largest)
  raise ValueError(f"settings must be among {list(SETTINGS)}, got {setting!r}")


# Per process: the evaluator, the autoencoder and each strategy, built once and reused
# by every run the process does (a strategy holds no per-run state; reusing latent BO's
# compiled functions saves a compilation per padded data size and run).
_PROCESS_CACHE: dict[str, Any] = {}


def _cached(key: str, build: Any) -> Any:
  if key not in _PROCESS_CACHE:
    _PROCESS_CACHE[key] = build()
  return _PROCESS_CACHE[key]


def _run_one(args: tuple) -> dict[str, Any]:
  config, setting, name, seed, workdir = args
  config_key = config.to_json_best_effort(sort_keys=True)
  space = _cached(
    f"space {config_key}", lambda: make_space(space_from_config(config.space))
  )
  evaluate = _cached(f"evaluator {config_key}", lambda: make_evaluator(config, space))
  budget = _setting_budget(config, space, setting)
  settings = from_config(
    strategies.StrategySettings, config.strategy_config, "strategy_config"
  )
  ae = None
  if name == "latent_bo":
    ae = _cached(
      f"autoencoder {config_key}",
      lambda: ae_lib.load_or_train(
        space,
        from_config(ae_lib.AutoencoderConfig, config.autoencoder, "autoencoder"),
        config.cache_dir,
        progress=False,
      ),
    )
  run_dir = Path(workdir) / "runs" / setting / name / f"seed{seed}"
  ctx = strategies.SearchContext(space, budget, 32, 8, History.open(run_dir), ae)
  objective = evaluators.Objective(metric=config.metric)
  key = jax.random.key(seed)
  start = time.perf_counter()
  run_strategy(
    ctx,
    strategies.RandomSearch(),
    evaluate,
    objective,
    config.num_initial,
    jax.random.fold_in(key, 1),
    label="initial",
    count_all=False,
  )
  strategy = _cached(
    f"{name} {config_key}", lambda: strategies.make_strategy(name, settings, ae)
  )
  executor = executors.make_executor(
    from_config(executors.ExecutorConfig, config.executor, "executor"),
    evaluate=evaluate,
    factory=functools.partial(make_evaluator, config),
  )
  try:
    run_strategy(
      ctx,
      strategy,
      evaluate,
      objective,
      config.num_queries,
      jax.random.fold_in(key, 2),
      executor=executor,
    )
  finally:
    executor.close()
  curve, best = [], -np.inf
  for r in ctx.history.evaluated():
    if r.status == "ok" and budget.fits(r.costs):
      best = max(best, r.objective)
    curve.append(best)
  return {
    "setting": setting,
    "strategy": name,
    "seed": seed,
    "curve": curve,
    "rejected": len(ctx.history) - len(ctx.history.evaluated()),
    "seconds": time.perf_counter() - start,
  }


def run_all(config: ml_collections.ConfigDict, workdir: str | Path) -> list[dict]:
  """Every (setting, seed, strategy) run, in ``config.processes`` processes; each returns
  its best-so-far curve. Runs already finished in ``workdir`` are read back."""
  jobs = [
    (config, setting, name, seed, str(workdir))
    for setting in config.settings
    for seed in range(config.num_seeds)
    for name in config.strategies_to_run
  ]
  if config.processes <= 1:
    return [_run_one(j) for j in jobs]
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(config.processes) as pool:
    results = []
    for i, r in enumerate(pool.imap_unordered(_run_one, jobs), start=1):
      results.append(r)
      print(
        f"[{i}/{len(jobs)}] {r['setting']} {r['strategy']} seed {r['seed']}: "
        f"best {r['curve'][-1]:.3f} ({r['seconds']:.0f} s)",
        flush=True,
      )
  return results


def compare_strategies(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
  """Runs the comparison and writes results.json, table.md and curves_<setting>.png."""
  with user_errors():
    unknown = [s for s in config.settings if s not in SETTINGS]
    if unknown:
      raise ValueError(f"settings must be among {list(SETTINGS)}, got {unknown}")
    unknown = [s for s in config.strategies_to_run if s not in strategies.STRATEGIES]
    if unknown:
      raise ValueError(
        f"strategies_to_run must be among {list(strategies.STRATEGIES)}, got {unknown}"
      )
    space = make_space(space_from_config(config.space))
    table_eval = make_table(config, space)
    from_config(strategies.StrategySettings, config.strategy_config, "strategy_config")
    from_config(executors.ExecutorConfig, config.executor, "executor")
    ae_config = from_config(ae_lib.AutoencoderConfig, config.autoencoder, "autoencoder")
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if "latent_bo" in config.strategies_to_run:  # train (or load) once, before the workers
    with user_errors():
      ae_lib.load_or_train(space, ae_config, config.cache_dir)
  start = time.perf_counter()
  results = run_all(config, workdir)
  wall = time.perf_counter() - start

  summary: dict[str, Any] = {
    "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} CPUs",
    "wall_seconds": wall,
    "config": json.loads(config.to_json_best_effort()),
    "settings": {},
  }
  lines = [f"# Strategy comparison ({config.evaluator}, metric {config.metric})", ""]
  for setting in config.settings:
    budget = _setting_budget(config, space, setting)
    feasible = (
      None
      if budget.params is None
      else (lambda a, b=budget: compute_costs(a).params <= b.params)
    )
    best_arch, best_value = table_eval.best(feasible)
    rows = {}
    lines += [
      f"## {setting} (table best feasible: {best_value:.3f}, `{best_arch}`)",
      "",
      "| strategy | "
      + " | ".join(f"best @{c}" for c in CHECKPOINTS if c <= config.num_queries)
      + f" | regret @{min(100, config.num_queries)} | found best |",
      "|---|" + "---|" * (len([c for c in CHECKPOINTS if c <= config.num_queries]) + 2),
    ]
    for name in config.strategies_to_run:
      curves = np.array(
        [r["curve"] for r in results if r["setting"] == setting and r["strategy"] == name]
      )
      at = {
        c: (float(curves[:, c - 1].mean()), float(curves[:, c - 1].std()))
        for c in CHECKPOINTS
        if c <= config.num_queries
      }
      k = min(100, config.num_queries)
      regret = best_value - curves[:, k - 1]
      found = float(np.mean(np.isclose(curves[:, -1], best_value)))
      rows[name] = {
        "best_at": at,
        "regret_at": {k: (float(regret.mean()), float(regret.std()))},
        "found_best_fraction": found,
        "mean_curve": curves.mean(0).tolist(),
      }
      lines.append(
        f"| {name} | "
        + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in at.values())
        + f" | {regret.mean():.3f} ± {regret.std():.3f} | {found:.0%} |"
      )
    lines.append("")
    summary["settings"][setting] = {"table_best": best_value, "strategies": rows}
    _plot(workdir / f"curves_{setting}.png", results, setting, config, best_value)
  lines.append(
    f"{config.num_seeds} seeds, {config.num_queries} queries ({config.num_initial} "
    f"shared random initial). Wall time {wall / 60:.1f} min on {summary['machine']}."
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


def default_config() -> ml_collections.ConfigDict:
  """configs/bench_nb201.py."""
  c = ml_collections.ConfigDict()
  c.space = to_config(space_config("nb201"))
  c.evaluator = "analognas"  # "analognas" or "table" (table_path: CSV or JSON).
  c.table_path = ""
  c.metric = "qat_accuracy"  # Column of the table to maximize.
  c.strategies_to_run = ("latent_bo", "random", "evolution")
  c.settings = ("unconstrained", "budget")
  c.params_budget_fraction = 0.5  # budget setting: at most this x the largest cell
  c.num_seeds = 20
  c.num_queries = 150
  c.num_initial = 10
  c.processes = 2  # Seeds run in parallel processes.
  c.eval_seconds = 0.0  # > 0: each evaluation also keeps a core busy this long.
  # Evaluations in flight after the initial design (local: simulated workers, so batch
  # BO can be compared with sequential BO at equal evaluation counts).
  c.executor = to_config(executors.ExecutorConfig())
  c.strategy_config = to_config(
    strategies.StrategySettings(map_steps=100, num_raw=256, num_starts=8, ascent_steps=50)
  )
  c.autoencoder = to_config(ae_lib.AutoencoderConfig(latent_dim=8, steps=2000))
  c.cache_dir = "~/.cache/nasq/autoencoders"
  return c
