"""What a search leaves for its reader: Pareto fronts, convergence curves, tables."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from nasq.costs import Budget, Costs
from nasq.history import STATUS_OK, History, Record, attribution
from nasq.spaces import Architecture


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
  """Indices of the points not dominated when minimizing x (a cost) and maximizing y
  (accuracy), sorted by x."""
  order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
  front, best_y = [], -np.inf
  for i in order:
    if points[i][1] > best_y:
      front.append(i)
      best_y = points[i][1]
  return front


def dominated_area(
  points: Sequence[tuple[float, float]], x_max: float, y_min: float
) -> float:
  """The 2-D hypervolume of ``points`` (x a cost to minimize, y an accuracy to
  maximize): the area of the region x <= x_max, y >= y_min dominated by at least one
  point. Points beyond ``x_max`` or below ``y_min`` add nothing; a larger area is a
  better front, comparable between fronts only at the same (x_max, y_min)."""
  inside = [(x, y) for x, y in points if x <= x_max and y >= y_min]
  area = 0.0
  front = [inside[i] for i in pareto_front(inside)]  # x increasing, y increasing
  for k, (x, y) in enumerate(front):
    x_next = front[k + 1][0] if k + 1 < len(front) else x_max
    area += (x_next - x) * (y - y_min)
  return area


def best_so_far(
  history: History, feasible: Callable[[Record], bool]
) -> list[tuple[int, float]]:
  """(evaluation count, best feasible objective so far) after each evaluation."""
  out, best, n = [], -np.inf, 0
  for r in history.evaluated():
    n += 1
    if r.status == STATUS_OK and feasible(r) and r.objective is not None:
      best = max(best, r.objective)
    out.append((n, best))
  return out


def _plot_front(ax, records: list[Record], cost: str, scale: float, label: str):
  pts = [(r.costs[cost] / scale, r.metrics["val_accuracy"]) for r in records]
  if not pts:
    return
  xs, ys = zip(*pts, strict=True)
  ax.scatter(xs, ys, s=12, alpha=0.5, label=f"{label} evaluated")
  front = pareto_front(pts)
  ax.plot(
    [pts[i][0] for i in front],
    [pts[i][1] for i in front],
    "-o",
    ms=4,
    label=f"{label} Pareto front",
  )


def accuracy_text(entry: dict[str, Any]) -> str:
  """A retrained network's test accuracy: the mean, and with several seeds its standard
  deviation and each seed's (``nasq.runs.final``)."""
  acc = entry["test_accuracy"]
  if acc is None:
    return "failed"
  each = entry.get("test_accuracies") or [acc]
  if len(each) < 2:
    return f"{acc:.4f}"
  std = entry.get("test_accuracy_std")
  spread = "" if std is None else f" ± {std:.4f}"
  listed = ", ".join("failed" if a is None else f"{a:.4f}" for a in each)
  return f"{acc:.4f}{spread} ({len(each)} seeds: {listed})"


def write_report(
  workdir: Path,
  history: History,
  finals: list[dict[str, Any]],
  budget: Budget,
  *,
  strategy: str,
  weight_bits: int,
  num_initial: int,
  objective_kind: str,
  search_seconds: float = 0.0,
  rung_names: Sequence[str] = (),
  reference: dict[str, Any] | None = None,
  weight_bits_choices: Sequence[int] = (),
) -> dict[str, Any]:
  """Writes report.md, pareto_size.png, pareto_macs.png, best_so_far.png, summary.json.
  ``rung_names``: the fidelity of each promotion rung (``nasq.promotion``), if any;
  ``reference``: a hand-designed network retrained with the same recipe, if any;
  ``weight_bits_choices``: the per-layer widths of a mixed-precision space (then
  ``weight_bits`` is not every layer's width, and the report says so)."""
  bits_label = (
    "per-layer " + "/".join(str(b) for b in sorted(weight_bits_choices)) + "-bit"
    if weight_bits_choices
    else f"{weight_bits}-bit"
  )
  ok = [r for r in history.successful() if r.metrics.get("val_accuracy") is not None]
  feasible = lambda r: budget.fits(r.costs)  # noqa: E731
  for cost, scale, unit, name in (
    ("model_size_bits", 8000, "model size (kB)", "pareto_size.png"),
    ("macs", 1e6, "MACs (M)", "pareto_macs.png"),
  ):
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    _plot_front(ax, ok, cost, scale, bits_label)
    limit = getattr(budget, cost)
    if limit is not None:
      ax.axvline(limit / scale, color="r", ls="--", lw=1, label="budget")
    ax.set_xlabel(unit)
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{strategy}: accuracy vs {unit}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(workdir / name, dpi=120)

  curve = best_so_far(history, feasible)
  fig = Figure(figsize=(6, 4))
  ax = fig.subplots()
  if curve:
    ax.step([c[0] for c in curve], [c[1] for c in curve], where="post")
  ax.axvline(num_initial + 0.5, color="gray", ls=":", lw=1, label="initial design")
  ax.set_xlabel("evaluations")
  ax.set_ylabel(f"best feasible {objective_kind} objective")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(workdir / "best_so_far.png", dpi=120)

  # search_seconds counts this invocation only (0 when a resumed search had nothing
  # left to evaluate); the records' own wall times add up every run's evaluations.
  evaluation_seconds = sum(r.seconds for r in history.evaluated(fidelity=None))
  statuses: dict[str, int] = {}
  for r in history:
    statuses[r.status] = statuses.get(r.status, 0) + 1
  best = max((r for r in ok if feasible(r)), key=lambda r: r.objective, default=None)
  lines = [
    f"# Search report: {strategy}, {bits_label} weights",
    "",
    f"Budget: {budget}. Records: {statuses}. Search time in this run: "
    f"{search_seconds / 60:.1f} min; evaluation time in the history (every run of "
    f"this search, resumed ones included): {evaluation_seconds / 60:.1f} min.",
    "",
  ]
  if best is not None:
    lines += [
      f"Best feasible candidate in the search: #{best.index} `{best.arch}`, "
      f"validation accuracy {best.metrics['val_accuracy']:.4f}.",
      "",
    ]
  origins = attribution(history)
  if origins:
    total = sum(o["proposals"] for o in origins.values())
    gains = sum(o["improvements"] for o in origins.values())
    lines += [
      "## Where the proposals came from",
      "",
      "Each evaluated proposal after the initial design, by its origin within the "
      "strategy; an improvement sets a new best objective over every earlier "
      "evaluation.",
      "",
      "| origin | proposals | share | improvements | share of improvements | best |",
      "|---|---|---|---|---|---|",
    ]
    for name, o in origins.items():
      best_o = "-" if o["best"] is None else f"{o['best']:.4f}"
      lines.append(
        f"| {name} | {o['proposals']} | {o['proposals'] / total:.0%} | "
        f"{o['improvements']} | {o['improvements'] / max(gains, 1):.0%} | {best_o} |"
      )
    lines.append("")
  rungs = promotion_summary(history, rung_names)
  if rungs:
    lines += [
      "## Successive halving (the best candidates trained longer, rung by rung)",
      "",
      "| rung | fidelity | evaluated | failed | best objective | best architecture |",
      "|---|---|---|---|---|---|",
    ]
    for r in rungs:
      best_r = "-" if r["best"] is None else f"{r['best']['objective']:.4f}"
      arch = "-" if r["best"] is None else f"`{r['best']['arch']}`"
      lines.append(
        f"| {r['rung']} | {r['fidelity']} | {r['evaluated']} | {r['failed']} | "
        f"{best_r} | {arch} |"
      )
    lines.append("")
  lines += [
    "## Retrained models (train+validation, test accuracy)",
    "",
    "Ranked by the search's validation score (the highest rung first); the delivered "
    "model (`best_checkpoint/`) is the first that retrained successfully, whatever "
    "the test accuracies: test data gives the final figure only. With several seeds "
    "(`final_seeds`) a test accuracy is their mean, each listed, and the checkpoint "
    "is the first seed's.",
    "",
    "| rank | # | architecture | test accuracy | search objective (rung) | params | "
    "MACs | size (kB) | peak act. (B) |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for rank, f in enumerate(finals, 1):
    c = f["costs"]
    acc = accuracy_text(f)
    mark = " (delivered)" if f.get("delivered") else ""
    lines.append(
      f"| {rank}{mark} | {f['index']} | `{f['arch']}` | {acc} | "
      f"{f['search_objective']:.4f} ({f.get('fidelity', 0)}) | {c['params']:.0f} | "
      f"{c['macs']:.0f} | {c['model_size_bits'] / 8000:.2f} | "
      f"{c['peak_activation_bytes']:.0f} |"
    )
  if reference is not None:
    c = reference["costs"]
    lines += [
      "",
      f"Reference (hand-designed, same final recipe): `{reference['arch']}`, test "
      f"accuracy {accuracy_text(reference)}, {c['params']:.0f} "
      f"params, {c['macs']:.0f} MACs, {c['model_size_bits'] / 8000:.2f} kB, peak "
      f"{c['peak_activation_bytes']:.0f} B"
      + ("" if reference["fits_budget"] else " (over the budget)")
      + ".",
    ]
  lines += [
    "",
    "Figures: `pareto_size.png`, `pareto_macs.png`, `best_so_far.png`. History: "
    "`history.jsonl`. Best model: `best_checkpoint/` (orbax), `best_architecture.txt`. "
    "Live metrics: `tensorboard --logdir tensorboard`.",
    "",
  ]
  (workdir / "report.md").write_text("\n".join(lines))
  summary = {
    "strategy": strategy,
    "weight_bits": weight_bits,
    "weight_bits_choices": list(weight_bits_choices),
    "records": statuses,
    "search_seconds": search_seconds,
    "evaluation_seconds": evaluation_seconds,
    "best_search": _brief(best),
    "origins": origins,
    "promotion": rungs,
    "final": finals,
    "reference": reference,
  }
  (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  return summary


def _brief(record: Record | None) -> dict[str, Any] | None:
  """What summary.json says of a record: its index, architecture and objective."""
  if record is None:
    return None
  return {"index": record.index, "arch": record.arch, "objective": record.objective}


def promotion_summary(history: History, rung_names: Sequence[str]) -> list[dict]:
  """Per promotion rung: its fidelity, evaluations, failures and best record."""
  out = []
  for k, name in enumerate(rung_names, start=1):
    evaluated = history.evaluated(k)
    best = history.best(k)
    out.append(
      {
        "rung": k,
        "fidelity": name,
        "evaluated": len(evaluated),
        "failed": sum(r.status != STATUS_OK for r in evaluated),
        "best": _brief(best),
      }
    )
  return out


def plot_bit_width_fronts(
  histories: dict[int, History], budget: Budget, path: Path
) -> None:
  """Accuracy vs model size of several searches (one per weight bit width), combined."""
  fig = Figure(figsize=(6.5, 4.5))
  ax = fig.subplots()
  for bits, history in sorted(histories.items(), reverse=True):
    ok = [r for r in history.successful() if r.metrics.get("val_accuracy") is not None]
    _plot_front(ax, ok, "model_size_bits", 8000, f"{bits}-bit")
  if budget.model_size_bits is not None:
    ax.axvline(budget.model_size_bits / 8000, color="r", ls="--", lw=1, label="budget")
  ax.set_xscale("log")
  ax.set_xlabel("model size (kB)")
  ax.set_ylabel("validation accuracy")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def costs_table(arch: Architecture, costs: Costs) -> str:
  """A Markdown per-layer cost breakdown."""
  lines = [
    f"# Costs of `{arch.to_string()}`",
    "",
    f"weights {costs.weight_bits}-bit, activations {costs.activation_bits}-bit: "
    f"{costs.params} params, {costs.macs} MACs, {costs.model_size_bits} bits "
    f"({costs.model_size_bits / 8 / 1000:.2f} kB), peak activations "
    f"{costs.peak_activation_bytes} bytes",
    "",
    "| layer | op | input | output | params | MACs | weight bits | size (bits) |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for u in costs.layers:
    if u.params or u.macs:
      lines.append(
        f"| {u.name} | {u.op} | {u.input_shape} | {u.output_shape} | "
        f"{u.params} | {u.macs} | {u.weight_bits if u.kernel_params else '-'} "
        f"| {u.model_size_bits} |"
      )
  return "\n".join(lines) + "\n"
