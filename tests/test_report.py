"""What a search leaves for its reader: fronts, curves, the report and its summary."""

import dataclasses
import functools
import itertools
import json

import jax
import numpy as np
import pytest

from nasq import evaluators, report, strategies
from nasq.costs import compute_costs
from nasq.loop import run_strategy
from nasq.spaces import macro


def brute_force_front(points):
  """Points no other point dominates (x no larger and y no smaller, one strictly)."""
  return sorted(
    i
    for i, (x, y) in enumerate(points)
    if not any(
      (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points)
    )
  )


def test_pareto_front_against_brute_force():
  rng = np.random.default_rng(0)
  for _ in range(20):
    points = [(float(x), float(y)) for x, y in rng.integers(0, 8, (15, 2))]
    front = report.pareto_front(points)
    assert [points[i][0] for i in front] == sorted(points[i][0] for i in front)
    # Among exact duplicates only one is kept; compare the distinct points.
    assert sorted({points[i] for i in front}) == sorted(
      {points[i] for i in brute_force_front(points)}
    )


def test_dominated_area_against_a_grid_count():
  # On integer points the dominated region is a union of unit cells: count them.
  rng = np.random.default_rng(1)
  for _ in range(20):
    points = [(float(x), float(y)) for x, y in rng.integers(0, 10, (8, 2))]
    x_max, y_min = 8.0, 2.0
    cells = sum(
      any(x <= cx and y >= cy + 1 for x, y in points)
      for cx in range(int(x_max))
      for cy in range(int(y_min), 10)
    )
    assert report.dominated_area(points, x_max, y_min) == pytest.approx(cells)


def test_dominated_area_of_one_point_and_of_none():
  assert report.dominated_area([(2.0, 0.9)], 10.0, 0.5) == pytest.approx(8 * 0.4)
  assert report.dominated_area([(11.0, 0.9), (2.0, 0.4)], 10.0, 0.5) == 0.0
  assert report.dominated_area([], 10.0, 0.5) == 0.0


def test_best_so_far_only_counts_feasible_successes(make_ctx, cheap_evaluate):
  ctx = make_ctx()
  run_strategy(
    ctx,
    strategies.RandomSearch(),
    cheap_evaluate,
    evaluators.Objective(),
    8,
    jax.random.key(0),
  )
  records = ctx.history.evaluated()
  limit = sorted(r.costs["params"] for r in records)[4]
  feasible = lambda r: r.costs["params"] <= limit  # noqa: E731
  curve = report.best_so_far(ctx.history, feasible)
  expected = list(
    itertools.accumulate((r.objective if feasible(r) else -np.inf for r in records), max)
  )
  assert [n for n, _ in curve] == list(range(1, 9))
  assert [v for _, v in curve] == expected


def test_write_report(tmp_path, make_ctx, cheap_evaluate):
  ctx = make_ctx(params=3000)

  def evaluate(arch, seed):  # each evaluation reports 30 s of wall time
    return dataclasses.replace(cheap_evaluate(arch, seed), seconds=30.0)

  run_strategy(
    ctx,
    strategies.RandomSearch(),
    evaluate,
    evaluators.Objective(),
    6,
    jax.random.key(1),
  )
  best = ctx.history.best()
  finals = [
    {
      "index": best.index,
      "arch": best.arch,
      "search_objective": best.objective,
      "status": "ok",
      "test_accuracy": 0.875,
      "seconds": 1.0,
      "costs": best.costs,
    }
  ]
  write = functools.partial(
    report.write_report,
    tmp_path,
    ctx.history,
    finals,
    ctx.budget,
    strategy="random",
    weight_bits=4,
    num_initial=2,
    objective_kind="constrained",
  )
  summary = write(search_seconds=60.0)
  text = (tmp_path / "report.md").read_text()
  assert text.startswith("# Search report: random, 4-bit weights")
  assert f"| {best.index} | `{best.arch}` | 0.8750 |" in text
  for name in ("pareto_size.png", "pareto_macs.png", "best_so_far.png"):
    assert (tmp_path / name).stat().st_size > 5_000, name
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert saved["best_search"]["index"] == summary["best_search"]["index"] == best.index
  assert saved["records"] == {"ok": 6}
  assert saved["final"][0]["test_accuracy"] == 0.875
  # Every proposal came from random search's sampler; an improvement is a new maximum.
  values = [r.objective for r in ctx.history.evaluated()]
  gains = sum(v > max(values[:i], default=float("-inf")) for i, v in enumerate(values))
  assert summary["origins"] == {
    "random": {"proposals": 6, "improvements": gains, "best": max(values)}
  }
  assert f"| random | 6 | 100% | {gains} | 100% | {max(values):.4f} |" in text
  # This run's clock and the history's evaluation time are reported apart, so a
  # resumed search with nothing left to run does not read as a search of no time.
  assert summary["evaluation_seconds"] == pytest.approx(6 * 30.0)
  assert "Search time in this run: 1.0 min" in text
  assert (
    "evaluation time in the history (every run of this search, resumed ones "
    "included): 3.0 min." in text
  )
  assert summary["weight_bits_choices"] == []
  # A mixed-precision space's report names its per-layer widths, not weight_bits.
  mixed = write(weight_bits_choices=(8, 2, 4))
  text = (tmp_path / "report.md").read_text()
  assert text.startswith("# Search report: random, per-layer 2/4/8-bit weights")
  assert mixed["weight_bits_choices"] == [8, 2, 4]


def test_costs_table_lists_every_weighted_layer():
  arch = macro.reference_architecture("fmnist_ref")
  costs = compute_costs(arch, 4)
  table = report.costs_table(arch, costs)
  lines = table.splitlines()
  start = lines.index("|---|---|---|---|---|---|---|---|") + 1
  rows = [line.split(" | ") for line in lines[start:] if line.startswith("|")]
  # By hand: five 3x3 convolutions (the two max pools have no weights), then the
  # classifier; params 3*3*cin*cout + 2*cout (BatchNorm), dense 48*10 + 10.
  assert [r[0].strip("| ") for r in rows] == [
    "layer0", "layer1", "layer3", "layer4", "layer6", "classifier"
  ]  # fmt: skip
  expected = [9 * 1 * 32 + 64, 9 * 32 * 32 + 64, 9 * 32 * 64 + 128, 9 * 64 * 64 + 128]
  expected += [9 * 64 * 48 + 96, 48 * 10 + 10]
  assert [int(r[4]) for r in rows] == expected
  assert f"{sum(expected)} params" in table
