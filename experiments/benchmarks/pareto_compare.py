r"""Compares the Pareto fronts of finished searches at equal candidate count.

  python experiments/benchmarks/pareto_compare.py \
      --runs=uniform4=/tmp/nasq_mcu,mixed=/tmp/nasq_mcu_mixed --count=60

Each run is a search's workdir (its ``history.jsonl`` and ``config.json``). From each,
the first ``--count`` evaluated records at ``--fidelity`` (0: the search's own
evaluations, all at the same training signal, so their validation accuracies are
comparable between runs with that signal) that succeeded and fit the run's budgets
are taken; for each cost (KB of stored weights, MACs) the script prints every run's
front (the architectures no other record of that run beats on both the cost and the
validation accuracy), the area each front dominates up to the budget and above
``--floor`` (``nasq.report.dominated_area``; larger is better, and the areas are
comparable because every run is measured from the same corner), and how many points
of each front some other run's front dominates. One search per run: a difference
includes the chance of its random initial design, which this does not separate.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import app, flags

from nasq import report
from nasq.history import STATUS_OK, History

_RUNS = flags.DEFINE_list("runs", None, "label=workdir pairs, at least two.")
_COUNT = flags.DEFINE_integer("count", 60, "Evaluated records taken from each run.")
_FIDELITY = flags.DEFINE_integer("fidelity", 0, "Which evaluations: 0 = the search's.")
_FLOOR = flags.DEFINE_float("floor", 0.5, "The accuracy the areas are measured from.")

# cost key in the records, its column title, the divisor to that unit
_COSTS = (("model_size_bits", "KB of weights", 8 * 1024), ("macs", "M MACs", 1e6))


def _load(spec: str, count: int, fidelity: int):
  label, sep, path = spec.partition("=")
  if not sep or not label or not path:
    raise app.UsageError(f"--runs: {spec!r} is not label=workdir")
  workdir = Path(path)
  if not (workdir / History.FILENAME).exists():
    raise app.UsageError(f"--runs: {label}: no {History.FILENAME} in {workdir}")
  budget = {}
  if (workdir / "config.json").exists():
    budget = json.loads((workdir / "config.json").read_text()).get("budget", {})
  records = History.open(workdir).evaluated(fidelity)[:count]
  fits = [
    r
    for r in records
    if r.status == STATUS_OK
    and r.objective is not None
    and all(
      limit is None or r.costs.get(key, 0) <= limit for key, limit in budget.items()
    )
  ]
  return label, budget, len(records), fits


def _dominated(p, front) -> bool:
  return any(x <= p[0] and y >= p[1] and (x, y) != tuple(p) for x, y in front)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _RUNS.value or len(_RUNS.value) < 2:
    raise app.UsageError("--runs: give at least two label=workdir pairs")
  runs = [_load(spec, _COUNT.value, _FIDELITY.value) for spec in _RUNS.value]
  for label, _, n, fits in runs:
    print(f"{label}: {n} evaluated records at fidelity {_FIDELITY.value}, {len(fits)} ok")
  for key, title, scale in _COSTS:
    limits = [b.get(key) for _, b, _, _ in runs if b.get(key) is not None]
    x_max = (
      min(limits) / scale
      if limits
      else max(r.costs[key] / scale for *_, fits in runs for r in fits)
    )
    fronts = {}
    for label, _, _, fits in runs:
      points = [(r.costs[key] / scale, r.objective) for r in fits]
      fronts[label] = [(points[i], fits[i]) for i in report.pareto_front(points)]
    print(f"\n## {title} (areas up to {x_max:g}, above {_FLOOR.value:g})\n")
    print("| run | front size | dominated area | front points dominated by another run |")
    print("| --- | ---: | ---: | ---: |")
    for label, front in fronts.items():
      points = [p for p, _ in front]
      others = [p for other, f in fronts.items() if other != label for p, _ in f]
      beaten = sum(_dominated(p, others) for p in points)
      area = report.dominated_area(points, x_max, _FLOOR.value)
      print(f"| {label} | {len(points)} | {area:.3f} | {beaten} of {len(points)} |")
    for label, front in fronts.items():
      print(f"\n{label}'s front ({title}, validation accuracy, architecture):")
      for (x, y), r in front:
        print(f"  {x:8.2f}  {y:.4f}  {r.arch}")


if __name__ == "__main__":
  app.run(main)
