"""Strategy comparison on a benchmark table: same evaluator, same budget, many seeds.

``compare_strategies(config, workdir)`` (``experiments/benchmarks/strategies.py``,
``configs/bench_nb201.py``) runs every strategy in ``config.strategies_to_run``
for ``config.num_seeds`` seeds and ``config.num_queries`` evaluations, in each setting
(unconstrained, and under a parameter budget), through the same ``run_strategy`` loop as
the real search. Seed s gives every strategy the same initial design. Each run keeps its
own history under the workdir, so an interrupted benchmark resumes. With
``config.record`` set, every finished run is also appended to that JSON-lines file
(``nasq.runs.record``), keyed by the run's settings and the version of the code that ran
it, and a later benchmark, in any workdir, reads matching runs back instead of running
them again: a long comparison can grow over several sessions, its rows committed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from nasq import autoencoder as ae_lib
from nasq import evaluators, executors, strategies
from nasq.costs import Budget
from nasq.feasibility import all_costs
from nasq.history import History
from nasq.loop import run_strategy
from nasq.runs import compare_report, record
from nasq.runs.config import from_config, space_from_config, to_config, user_errors
from nasq.spaces import SearchSpace, make_space, space_config

SETTINGS = ("unconstrained", "params_0.5", "params_0.25", "macs_0.5")
SETTING_COSTS = ("params", "macs")


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
  """``unconstrained``, or ``<cost>_<fraction>``: ``cost`` (params or macs) at most
  ``fraction`` of the largest architecture's in the space (e.g. ``params_0.25``)."""
  if setting == "unconstrained":
    return Budget()
  cost, _, fraction = setting.rpartition("_")
  try:
    value = float(fraction)
  except ValueError:
    value = -1.0
  if cost not in SETTING_COSTS or not 0 < value <= 1:
    raise ValueError(
      f"settings must be 'unconstrained' or '<cost>_<fraction>' with cost in "
      f"{list(SETTING_COSTS)} and 0 < fraction <= 1 (e.g. 'params_0.5'), got {setting!r}"
    )
  largest = max(c[cost] for c in all_costs(space))  # cached per space
  return Budget(**{cost: value * largest})


def _strategy_settings(
  config: ml_collections.ConfigDict, name: str
) -> tuple[str, strategies.StrategySettings]:
  """(base strategy, settings) of a strategy or a configured variant (``variants``:
  name -> {"strategy": base, field: value, ...} overriding ``strategy_config``)."""
  settings = from_config(
    strategies.StrategySettings, config.strategy_config, "strategy_config"
  )
  if name in strategies.STRATEGIES:
    return name, settings
  if name not in config.variants:
    raise ValueError(
      f"strategies_to_run must be among {list(strategies.STRATEGIES)} or the variants "
      f"{list(config.variants)}, got {name!r}"
    )
  overrides = dict(config.variants[name])
  base = overrides.pop("strategy", "latent_bo")
  if base not in strategies.STRATEGIES:
    raise ValueError(
      f"variants.{name}.strategy must be one of {list(strategies.STRATEGIES)}, got "
      f"{base!r}"
    )
  fields = {f.name for f in dataclasses.fields(strategies.StrategySettings)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"variants.{name}: unknown strategy fields {unknown}")
  return base, dataclasses.replace(settings, **overrides)


# Per process: the evaluator, the autoencoder and each strategy, built once and reused
# by every run the process does (a strategy holds no per-run state; reusing latent BO's
# compiled functions saves a compilation per padded data size and run).
_PROCESS_CACHE: dict[str, Any] = {}


def _cached(key: str, build: Any) -> Any:
  if key not in _PROCESS_CACHE:
    _PROCESS_CACHE[key] = build()
  return _PROCESS_CACHE[key]


def run_key(
  config: ml_collections.ConfigDict, setting: str, name: str, autoencoder: str = ""
) -> str:
  """A hash of everything a (setting, strategy) run depends on besides its seed and the
  code: space, table, metric, budget, queries, the strategy's resolved settings, the
  autoencoder (its config and, for latent BO, ``autoencoder``: the fingerprint of the
  trained weights it ran on) and the executor."""
  base, settings = _strategy_settings(config, name)
  fields = {
    "space": config.space.to_dict(),
    "evaluator": [config.evaluator, config.table_path, config.metric],
    "eval_seconds": config.eval_seconds,
    "setting": setting,
    "queries": [config.num_queries, config.num_initial],
    "strategy": [base, dataclasses.asdict(settings)],
    "autoencoder": (
      [config.autoencoder.to_dict(), autoencoder]
      if base in strategies.LATENT_STRATEGIES
      else None
    ),
    "executor": config.executor.to_dict(),
  }
  text = json.dumps(fields, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def _autoencoder(config: ml_collections.ConfigDict, space: SearchSpace):
  """The configured autoencoder, from the cache (trained there first if missing)."""
  return _cached(
    f"autoencoder {config.to_json_best_effort(sort_keys=True)}",
    lambda: ae_lib.load_or_train(
      space,
      from_config(ae_lib.AutoencoderConfig, config.autoencoder, "autoencoder"),
      config.cache_dir,
      progress=False,
    ),
  )


def _open_run_dir(run_dir: Path, stamp: dict[str, str]) -> History:
  """The run's history in ``run_dir``, resumed only if it was begun by this code, run
  key and environment (``run.json``); a run begun by other code is started over."""
  stamp_path = run_dir / "run.json"
  if run_dir.exists():
    begun = json.loads(stamp_path.read_text()) if stamp_path.exists() else None
    if begun != stamp:
      print(f"{run_dir}: begun by other code or settings ({begun}); starting over")
      shutil.rmtree(run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  if not stamp_path.exists():
    stamp_path.write_text(json.dumps(stamp, sort_keys=True))
  return History.open(run_dir)


def _run_one(args: tuple) -> dict[str, Any]:
  config, setting, name, seed, workdir, stamp = args
  config_key = config.to_json_best_effort(sort_keys=True)
  space = _cached(
    f"space {config_key}", lambda: make_space(space_from_config(config.space))
  )
  evaluate = _cached(f"evaluator {config_key}", lambda: make_evaluator(config, space))
  budget = _setting_budget(config, space, setting)
  base, settings = _strategy_settings(config, name)
  ae = _autoencoder(config, space) if base in strategies.LATENT_STRATEGIES else None
  run_dir = Path(workdir) / "runs" / setting / name / f"seed{seed}"
  # Exact costs depend on the architecture alone: one memo for every run of the process.
  costs = _cached(f"costs {config_key}", dict)
  ctx = strategies.SearchContext(
    space, budget, 32, 8, _open_run_dir(run_dir, stamp), ae, cost_cache=costs
  )
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
    f"{name} {config_key}", lambda: strategies.make_strategy(base, settings, ae)
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
  sources = [r.source for r in ctx.history.evaluated() if r.source != "initial"]
  return {
    "setting": setting,
    "strategy": name,
    "seed": seed,
    "curve": curve,
    "fallbacks": sum(src.endswith("/random") for src in sources),
    "proposals": len(sources),
    "rejected": len(ctx.history) - len(ctx.history.evaluated()),
    # Proposals over the budget (recorded, not trained; the loop moved to the next).
    "infeasible": sum(
      r.status == "infeasible" and r.source != "initial" for r in ctx.history
    ),
    "seconds": time.perf_counter() - start,
  }


def _pin_worker(cores: list[int]) -> None:
  """Pins each worker to its own core (round robin) when there are enough of them.
  Unpinned, the workers' XLA thread pools contend for the same cores: on 2 cores two
  unpinned workers ran each latent-BO run about 3x slower than one worker alone, two
  pinned ones about 1.1x."""
  identity = multiprocessing.current_process()._identity  # (k,) in the k-th worker
  if len(cores) > 1 and identity:
    os.sched_setaffinity(0, {cores[(identity[0] - 1) % len(cores)]})


# Modules a comparison imports (through nasq.evaluators' QAT evaluator) that a run on a
# benchmark table never executes, and the record's own reading and writing: an edit to
# them cannot change a recorded run, so the code version leaves them out
# (tests/runs/test_compare.py checks that a table comparison calls nothing in the first
# three; nasq.quant stays in, its check_bits runs).
NOT_RUN_ON_A_TABLE = ("nasq.data", "nasq.models", "nasq.ops", "nasq.train")
BOOKKEEPING = ("nasq.runs.record", "nasq.runs.compare_report")


def code_version() -> str:
  """The version of the code a recorded table run was produced by (``record``)."""
  return record.code_version("nasq.runs.compare", NOT_RUN_ON_A_TABLE + BOOKKEEPING)


def run_all(config: ml_collections.ConfigDict, workdir: str | Path) -> list[dict]:
  """Every (setting, seed, strategy) run, in ``config.processes`` processes; each returns
  its best-so-far curve. Runs already finished in ``workdir``, or recorded in
  ``config.record`` for this code version and run key, are read back."""
  version = code_version()
  # Latent-BO runs are keyed by the trained autoencoder too: rows recorded with other
  # weights (another machine's training of the same config) are not this run.
  fingerprint = ""
  if any(
    _strategy_settings(config, n)[0] in strategies.LATENT_STRATEGIES
    for n in config.strategies_to_run
  ):
    space = make_space(space_from_config(config.space))
    fingerprint = _autoencoder(config, space).fingerprint
  keys = {
    (setting, name): run_key(config, setting, name, fingerprint)
    for setting in config.settings
    for name in config.strategies_to_run
  }
  env = record.environment()
  env_hash = record.environment_hash(env)
  recorded = (
    record.index(record.read(config.record), config.record) if config.record else {}
  )
  results, jobs = [], []
  # Seed by seed, so a stopped benchmark holds whole seeds of every setting.
  for seed in range(config.num_seeds):
    for setting in config.settings:
      for name in config.strategies_to_run:
        # The latent strategies' curves differ across machines and library versions;
        # random search and evolution repeated every recorded curve on other machines.
        row = record.lookup(
          recorded,
          version,
          keys[setting, name],
          seed,
          env,
          _strategy_settings(config, name)[0] not in strategies.LATENT_STRATEGIES,
        )
        if row is not None:
          results.append({**row, "setting": setting, "strategy": name, "read_back": True})
        else:
          stamp = {"code": version, "key": keys[setting, name], "env": env_hash}
          jobs.append((config, setting, name, seed, str(workdir), stamp))
  if results:
    print(
      f"{len(results)} runs read back from {config.record} (code {version}); "
      f"{len(jobs)} to run",
      flush=True,
    )

  def finished(i, r):
    r = {
      **r,
      "code": version,
      "key": keys[r["setting"], r["strategy"]],
      "env": env,
      "env_hash": env_hash,
    }
    if config.record:
      record.append(config.record, r)
    results.append(r)
    print(
      f"[{i}/{len(jobs)}] {r['setting']} {r['strategy']} seed {r['seed']}: "
      f"best {r['curve'][-1]:.3f} ({r['seconds']:.0f} s)",
      flush=True,
    )

  if config.processes <= 1 or len(jobs) <= 1:
    for i, job in enumerate(jobs, start=1):
      finished(i, _run_one(job))
    return results
  ctx = multiprocessing.get_context("spawn")
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  with ctx.Pool(config.processes, _pin_worker, (cores,)) as pool:
    for i, r in enumerate(pool.imap_unordered(_run_one, jobs), start=1):
      finished(i, r)
  return results


def compare_strategies(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
  """Runs the comparison and writes results.json, table.md and curves_<setting>.png."""
  with user_errors():
    space = make_space(space_from_config(config.space))
    for setting in config.settings:
      _setting_budget(config, space, setting)
    bases = {_strategy_settings(config, name)[0] for name in config.strategies_to_run}
    table_eval = make_table(config, space)
    from_config(executors.ExecutorConfig, config.executor, "executor")
    ae_config = from_config(ae_lib.AutoencoderConfig, config.autoencoder, "autoencoder")
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  # Train (or load) the autoencoder once, before the workers.
  if bases & set(strategies.LATENT_STRATEGIES):
    with user_errors():
      ae_lib.load_or_train(space, ae_config, config.cache_dir)
  start = time.perf_counter()
  results = run_all(config, workdir)
  wall = time.perf_counter() - start

  return compare_report.write(
    workdir, config, results, wall, table_eval, space, _setting_budget
  )


def default_config() -> ml_collections.ConfigDict:
  """configs/bench_nb201.py."""
  c = ml_collections.ConfigDict()
  c.space = to_config(space_config("nb201"))
  c.evaluator = "analognas"  # "analognas" or "table" (table_path: CSV or JSON).
  c.table_path = ""
  c.metric = "qat_accuracy"  # Column of the table to maximize.
  c.strategies_to_run = ("latent_bo", "token_bo", "lbq_nas", "random", "evolution")
  # "unconstrained" or "<params|macs>_<fraction>": at most that fraction of the largest
  # cell's parameters or MACs.
  c.settings = SETTINGS
  c.num_seeds = 20
  c.num_queries = 150
  c.num_initial = 10
  c.processes = 2  # Seeds run in parallel processes.
  # A JSON-lines file of finished runs, kept across workdirs and sessions: runs recorded
  # there for this code version are read back, new ones appended ("" = none).
  c.record = ""
  c.eval_seconds = 0.0  # > 0: each evaluation also keeps a core busy this long.
  # Evaluations in flight after the initial design (local: simulated workers, so batch
  # BO can be compared with sequential BO at equal evaluation counts).
  c.executor = to_config(executors.ExecutorConfig())
  # Variants of a strategy, runnable by name in strategies_to_run (the ablations):
  # name -> {"strategy": base, <strategy_config field>: value, ...}; the ablations'
  # are in configs/bench_nb201.py.
  c.variants = ml_collections.ConfigDict({"latent_bo_pof": {"feasibility": "pof"}})
  c.strategy_config = to_config(strategies.StrategySettings(map_steps=100))
  c.autoencoder = to_config(ae_lib.AutoencoderConfig(latent_dim=8, steps=2000))
  c.cache_dir = "~/.cache/nasq/autoencoders"
  return c
