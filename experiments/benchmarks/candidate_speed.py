r"""Wall time of one default-search evaluation, per architecture, this code against a
baseline commit, in one run on one machine.

One evaluation is what the default search (configs/default.py) spends on a candidate:
4-bit QAT for 1 epoch on 6,000 Fashion-MNIST images (batch 128, 0.1 warm-up epochs),
then validation accuracy on the 10,000 validation images. Each evaluation runs in a
fresh process (so nothing compiled for one architecture serves another); the baseline's
and this code's evaluations of an architecture run back to back, so both see the same
machine load. Reported per architecture: the evaluation's wall time (the evaluator's
call, as the search records it), the whole process's wall time (imports and data
loading included), the validation accuracy (equal up to float rounding if the change
only moved rounding), and, for this code, the fixed cost (everything but the optimizer
steps: compilation, initialization, evaluation passes, setup).

Architectures: the fidelity table's (``_archs.architectures``: fmnist_ref, 30 drawn
depth-uniformly from the default space within its budgets, 3 hand-written), plus 10
more drawn the same way with another seed; the list is committed in
``data/candidate_speed_archs.txt`` (``--write_list`` rewrites it).

  python experiments/benchmarks/candidate_speed.py --baseline=c6f66cd
  python experiments/benchmarks/candidate_speed.py --baseline=c6f66cd --limit=5
  python experiments/benchmarks/candidate_speed.py --limit=12 \
      --baseline_env=XLA_FLAGS= \
      --env=XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=   # an XLA:CPU flag
  python experiments/benchmarks/candidate_speed.py --baseline=c6f66cd \
      --report_only=experiments/benchmarks/data/candidate_speed.json

About 40 minutes on 2 cores with a baseline from before the depthwise change.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _subprocess  # noqa: E402

LIST = Path(__file__).parent / "data" / "candidate_speed_archs.txt"

_BASELINE = flags.DEFINE_string("baseline", "", "A commit to measure as well.")
_BASELINE_ENV = flags.DEFINE_list(
  "baseline_env",
  [],
  "NAME=VALUE settings of the baseline's processes (with no --baseline: this code "
  "under them), e.g. XLA_FLAGS= against --env=XLA_FLAGS=<a flag> to measure it.",
)
_ENV = flags.DEFINE_list("env", [], "NAME=VALUE settings of this code's processes.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Only the first N architectures (0: all).")
_WRITE_LIST = flags.DEFINE_bool(
  "write_list", False, "Draw and write the list, then stop."
)
_OUT = flags.DEFINE_string("out", "", "Also write the results as JSON here.")
_ARCH = flags.DEFINE_string("arch", "", "Internal: evaluate this one and print JSON.")
_REPORT_ONLY = flags.DEFINE_string(
  "report_only", "", "Print the tables of this earlier --out JSON file; measure nothing."
)


def write_list() -> None:
  """The fidelity table's architectures, then 10 more from another sampling seed."""
  import _archs

  from nasq.costs import Budget
  from nasq.runs.config import from_config, space_from_config
  from nasq.spaces import make_space

  sys.path.insert(0, os.path.join(_subprocess.REPO, "configs"))
  import default

  config = default.get_config()
  space = make_space(space_from_config(config.space))
  budget = from_config(Budget, config.budget, "budget")
  table = _archs.architectures(space, budget, config.weight_bits, 30, 0)
  more = _archs.architectures(space, budget, config.weight_bits, 40, 1, False)
  names = [a.to_string() for _, a in table]
  names += [a.to_string() for _, a in more if a.to_string() not in names][:10]
  LIST.write_text(
    "# The fidelity table's 34 architectures, then 10 more drawn from the default\n"
    "# space within its budgets (experiments/benchmarks/candidate_speed.py --write_list)\n"
    + "\n".join(names)
    + "\n"
  )
  print(f"wrote {len(names)} architectures to {LIST}")


def evaluate_one(text: str, process_start: float) -> dict:
  """One default-search evaluation of ``text`` (RESULT line for the parent)."""
  import dataclasses

  from nasq import data, train
  from nasq.quant import QuantConfig
  from nasq.spaces import macro

  dataset = data.load_dataset(data.DataConfig(train_size=6000))
  arch = macro.space_for_string(text, dataset.input_shape, dataset.num_classes).parse(
    text
  )
  config = train.TrainConfig(epochs=1, warmup_epochs=0.1, progress=False)
  result = train.train_and_evaluate(arch, QuantConfig(weight_bits=4), dataset, config)
  out = dataclasses.asdict(dataclasses.replace(result, variables=None))
  return {
    "evaluation_s": result.wall_time_s,
    "process_s": time.perf_counter() - process_start,
    "val_accuracy": result.val_accuracy,
    "status": result.status,
    "phase_seconds": out.get("phase_seconds", {}),
    "macs": result.costs["macs"],
  }


def main(argv):
  del argv
  if _ARCH.value:
    print("RESULT " + json.dumps(evaluate_one(_ARCH.value, _PROCESS_START)))
    return
  if _WRITE_LIST.value:
    write_list()
    return
  if _REPORT_ONLY.value:
    rows = json.loads(Path(_REPORT_ONLY.value).read_text())
    has_base = any(r.get("baseline") for r in rows)
    base = f"@{_BASELINE.value or 'baseline'}" if has_base else ""
    report(rows, base)
    return
  archs = [ln for ln in LIST.read_text().splitlines() if ln and not ln.startswith("#")]
  archs = archs[: _LIMIT.value or None]
  print(
    f"machine: {os.cpu_count()} cores, {_subprocess.cpu_model()}; {len(archs)} "
    f"architectures; one default-search evaluation each, in a fresh process",
    flush=True,
  )
  rows = []
  context = _subprocess.worktree(_BASELINE.value) if _BASELINE.value else None
  base_root = context.__enter__() if context else None
  base = f"@{_subprocess.commit_of(_BASELINE.value)[:7]}" if _BASELINE.value else ""
  base_env, new_env = _environment(_BASELINE_ENV.value), _environment(_ENV.value)
  if base_env is not None:
    base = (base or "@this") + f" [{' '.join(_BASELINE_ENV.value)}]"
  if new_env is not None:
    print(f"this code's processes run with {' '.join(_ENV.value)}")
  try:
    for i, text in enumerate(archs):
      row = {"arch": text}
      if base:
        row["baseline"] = _subprocess.run_json(
          [__file__, f"--arch={text}"], base_root, base_env
        )
      row["new"] = _subprocess.run_json([__file__, f"--arch={text}"], env=new_env)
      rows.append(row)
      new, old = row["new"] or {}, row.get("baseline") or {}
      print(
        f"[{i + 1}/{len(archs)}] {text}: {new.get('evaluation_s', float('nan')):.1f} s"
        + (f" (baseline {old.get('evaluation_s', float('nan')):.1f} s)" if old else ""),
        flush=True,
      )
  finally:
    if context:
      context.__exit__(None, None, None)
  if _OUT.value:
    Path(_OUT.value).write_text(json.dumps(rows, indent=1))
  report(rows, base)


def _environment(settings: list[str]) -> dict | None:
  """The environment with ``NAME=VALUE`` settings applied (an empty VALUE removes
  NAME), or None for no settings. XLA_FLAGS is read once per process, so each
  variant's evaluations run in their own processes."""
  if not settings:
    return None
  env = dict(os.environ)
  for item in settings:
    name, sep, value = item.partition("=")
    if not sep:
      raise app.UsageError(f"--baseline_env/--env take NAME=VALUE, got {item!r}")
    env[name] = value
    if not value:
      env.pop(name)
  return env


def report(rows: list[dict], base: str) -> None:
  ok = [r for r in rows if r["new"] and (not base or r.get("baseline"))]
  print()
  head = "| architecture | MMACs | has dwsep |"
  if base:
    head += f" eval {base} (s) | eval new (s) | speed-up | process {base} (s) |"
  else:
    head += " eval new (s) |"
  head += " process new (s) | fixed cost new (s) | val acc new"
  head += f" | val acc {base} |" if base else " |"
  print(head)
  print("|" + "---|" * (head.count("|") - 1))
  speedups, fixed, dws = [], [], []
  for r in ok:
    new, old = r["new"], r.get("baseline")
    phases = new["phase_seconds"]
    fixed_s = new["evaluation_s"] - phases.get("train", 0.0) if phases else float("nan")
    fixed.append(fixed_s)
    dw = "dwsep" in r["arch"]
    cells = [f"`{r['arch']}`", f"{new['macs'] / 1e6:.1f}", "yes" if dw else "no"]
    if base:
      s = old["evaluation_s"] / new["evaluation_s"]
      speedups.append(s)
      if dw:
        dws.append(s)
      cells += [f"{old['evaluation_s']:.1f}", f"{new['evaluation_s']:.1f}", f"{s:.2f}x"]
      cells += [f"{old['process_s']:.1f}"]
    else:
      cells += [f"{new['evaluation_s']:.1f}"]
    cells += [f"{new['process_s']:.1f}", f"{fixed_s:.1f}", f"{new['val_accuracy']:.4f}"]
    if base:
      cells += [f"{old['val_accuracy']:.4f}"]
    print("| " + " | ".join(cells) + " |")
  med = statistics.median
  print()
  print(f"{len(ok)} architectures measured (of {len(rows)})")
  if fixed:
    print(f"fixed cost per candidate (new): median {med(fixed):.1f} s")
  if base and ok:
    ratio_of_medians = med(r["new"]["evaluation_s"] for r in ok) / med(
      r["baseline"]["evaluation_s"] for r in ok
    )
    print(
      f"median evaluation wall time, new / {base}: {ratio_of_medians:.2f}x; "
      f"per-architecture speed-up median {med(speedups):.2f}x, min {min(speedups):.2f}x"
    )
    if dws:
      print(
        f"architectures with a depthwise layer: speed-up min {min(dws):.2f}x, median "
        f"{med(dws):.2f}x ({len(dws)})"
      )
    accs = [abs(r["new"]["val_accuracy"] - r["baseline"]["val_accuracy"]) for r in ok]
    print(
      f"validation accuracy, |new - {base}|: median {med(accs):.4f}, max {max(accs):.4f}"
    )


_PROCESS_START = time.perf_counter()

if __name__ == "__main__":
  app.run(main)
