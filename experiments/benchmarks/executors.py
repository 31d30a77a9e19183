r"""Parallel evaluation: 1 against 2 Ray workers, and batch BO against sequential BO.

  pip install -e .[bench,ray]
  python experiments/benchmarks/executors.py --workdir=/tmp/nasq_exec

Part ``scaling``: 24 evaluations of random search on AnalogNAS-Bench (``qat_accuracy``),
each keeping a core busy ``--eval_seconds`` (a stand-in for training with a fixed cost),
on a local Ray cluster with 1 worker and then 2. The workers are started and have loaded
the table before the clock starts (a warm-up evaluation on each). Reported: wall time of
the 24 evaluations, the ratio (ideal: 2x with 2 cores), and that each history holds 24
distinct evaluations.

Part ``batch``: token BO keeping 4 evaluations in flight (kriging believer; the local
executor simulates 4 equal workers) against sequential token BO, ``--seeds`` seeds x
``--queries`` queries, unconstrained, configs/bench_nb201.py settings, the same random
initial design per seed. Reported: best ``qat_accuracy`` found after 25/50/100/150
evaluations and the regret at the end, mean +- std over seeds. Runs resume from
``workdir/batch``.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import platform
import shutil
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging

from nasq import evaluators, executors, strategies
from nasq.costs import Budget
from nasq.history import History
from nasq.loop import run_strategy
from nasq.runs import compare
from nasq.runs.config import space_from_config
from nasq.spaces import make_space

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/nasq_exec", "Output directory.")
_PARTS = flags.DEFINE_list("parts", ["scaling", "batch"], "Parts to run.")
_EVALS = flags.DEFINE_integer("evaluations", 24, "Evaluations timed in part scaling.")
_SECONDS = flags.DEFINE_float("eval_seconds", 2.0, "CPU time of one evaluation.")
_SEEDS = flags.DEFINE_integer("seeds", 10, "Seeds of part batch.")
_QUERIES = flags.DEFINE_integer("queries", 100, "Evaluations per run in part batch.")
_BATCH = flags.DEFINE_integer("batch", 4, "Evaluations in flight for batch BO.")
_PROCESSES = flags.DEFINE_integer("processes", 2, "Processes for part batch's runs.")
_CACHE = flags.DEFINE_string(
  "cache_dir", "~/.cache/nasq/autoencoders", "Trained autoencoders (part batch)."
)


def scaling(workdir: Path) -> dict:
  import ray

  ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
  config = compare.default_config()
  config.eval_seconds = _SECONDS.value
  factory = functools.partial(compare.make_evaluator, config)
  space = make_space(space_from_config(config.space))
  objective = evaluators.Objective(metric=config.metric)
  out = {}
  for workers in (1, 2):
    ex_config = executors.ExecutorConfig(kind="ray", num_workers=workers)
    executor = executors.make_executor(ex_config, factory=factory)

    def run(path: Path, n: int, key: int, executor=executor) -> History:
      shutil.rmtree(path, ignore_errors=True)
      ctx = strategies.SearchContext(space, Budget(), 32, 8, History.open(path))
      run_strategy(
        ctx,
        strategies.RandomSearch(),
        None,
        objective,
        n,
        jax.random.key(key),
        executor=executor,
      )
      return ctx.history

    run(workdir / f"warmup{workers}", workers, 100 + workers)  # start the workers
    start = time.perf_counter()
    history = run(workdir / f"workers{workers}", _EVALS.value, 0)
    wall = time.perf_counter() - start
    evaluated = history.evaluated()
    out[workers] = {
      "wall_seconds": wall,
      "evaluations": len(evaluated),
      "distinct": len({r.tokens for r in evaluated}),
      "ok": sum(r.status == "ok" for r in evaluated),
    }
    print(
      f"{workers} worker(s): {wall:.1f} s for {len(evaluated)} evaluations", flush=True
    )
  ray.shutdown()
  out["speedup"] = out[1]["wall_seconds"] / out[2]["wall_seconds"]
  return out


def batch(workdir: Path) -> dict:
  arms = {}
  for name, workers in (("sequential", 1), (f"batch{_BATCH.value}", _BATCH.value)):
    config = compare.default_config()
    config.strategies_to_run = ("token_bo",)
    config.settings = ("unconstrained",)
    config.num_seeds, config.num_queries = _SEEDS.value, _QUERIES.value
    config.processes = _PROCESSES.value
    config.executor.num_workers = workers
    config.cache_dir = _CACHE.value
    start = time.perf_counter()
    results = compare.run_all(config, workdir / name)
    curves = np.array([r["curve"] for r in sorted(results, key=lambda r: r["seed"])])
    arms[name] = {"curves": curves.tolist(), "seconds": time.perf_counter() - start}
  table = compare.make_table(config)
  arms["table_best"] = table.best()[1]
  return arms


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  workdir = Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  machine = f"{platform.machine()}, {multiprocessing.cpu_count()} CPUs"
  lines = [f"# Parallel evaluation ({machine})", ""]
  summary = {"machine": machine}
  if "scaling" in _PARTS.value:
    s = scaling(workdir / "scaling")
    summary["scaling"] = s
    lines += [
      f"## {_EVALS.value} evaluations of {_SECONDS.value:g} s CPU each, local Ray "
      "cluster (2 CPUs)",
      "",
      "| workers | wall time (s) | evaluations (distinct) |",
      "|---|---|---|",
    ]
    for w in (1, 2):
      lines.append(
        f"| {w} | {s[w]['wall_seconds']:.1f} | {s[w]['evaluations']} "
        f"({s[w]['distinct']}) |"
      )
    lines += ["", f"Speed-up with 2 workers: **{s['speedup']:.2f}x** (ideal 2x).", ""]
  if "batch" in _PARTS.value:
    b = batch(workdir / "batch")
    summary["batch"] = {k: v for k, v in b.items()}
    best = b["table_best"]
    marks = [c for c in (10, 25, 50, 100, 150) if c <= _QUERIES.value]
    lines += [
      f"## Latent BO on AnalogNAS-Bench qat_accuracy: {_BATCH.value} in flight vs "
      f"sequential ({_SEEDS.value} seeds, table best {best:.3f})",
      "",
      "| | " + " | ".join(f"best @{c}" for c in marks) + " | regret at end | time (s) |",
      "|---|" + "---|" * (len(marks) + 2),
    ]
    for name in ("sequential", f"batch{_BATCH.value}"):
      curves = np.asarray(b[name]["curves"])
      cells = [
        f"{curves[:, c - 1].mean():.3f} ± {curves[:, c - 1].std():.3f}" for c in marks
      ]
      regret = best - curves[:, -1]
      lines.append(
        f"| {name} | "
        + " | ".join(cells)
        + f" | {regret.mean():.3f} ± {regret.std():.3f} | {b[name]['seconds']:.0f} |"
      )
    lines.append("")
  text = "\n".join(lines)
  (workdir / "executors.md").write_text(text + "\n")
  (workdir / "executors.json").write_text(json.dumps(summary, indent=1))
  print(text)


if __name__ == "__main__":
  app.run(main)
