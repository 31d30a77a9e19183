r"""Resident memory of a long search: RSS after every candidate.

  python experiments/benchmarks/memory.py --candidates=200 --modes=in_process,clear_caches

Each mode runs in a fresh process: random search on the offline Fashion-MNIST under the
default budgets (64 KB of 4-bit weights, 30M MACs, 64 KB of peak activations), every
candidate trained with QAT for one epoch on ``--train_size`` images, so the run measures
memory, not accuracy. Modes:

* ``in_process``: candidates trained in the search's process, as the local executor does.
* ``clear_caches``: the same, with ``jax.clear_caches()`` after each candidate.

Writes ``<out>/rss_<mode>.jsonl`` (one line per candidate, flushed, so a run stopped
early keeps what it measured) and prints RSS at candidates 10, 20, 50, 100 and 200 and
the ratio of the last to candidate 20.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

_CANDIDATES = flags.DEFINE_integer("candidates", 200, "Candidates per mode.")
_TRAIN_SIZE = flags.DEFINE_integer("train_size", 500, "Training images per candidate.")
_MODES = flags.DEFINE_list("modes", ["in_process", "clear_caches"], "Modes to measure.")
_OUT = flags.DEFINE_string("out", "/tmp/nasq_memory", "Output directory.")
_CHILD = flags.DEFINE_string("child", "", "Internal: run one mode in this process.")

MARKS = (10, 20, 50, 100, 200)


def rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no VmRSS in /proc/self/status")


def child(mode: str, path: Path) -> None:
  import jax

  from nasq import data, evaluators, strategies, train
  from nasq.costs import Budget
  from nasq.history import History
  from nasq.loop import run_strategy
  from nasq.quant import QuantConfig
  from nasq.spaces import MacroSpace

  dataset = data.load_dataset(
    data.DataConfig(train_size=_TRAIN_SIZE.value, val_size=500, test_size=100)
  )
  schedule = train.TrainConfig(
    epochs=1, batch_size=50, eval_batch_size=100, warmup_epochs=0.1, progress=False
  )
  qat = evaluators.QATEvaluator(dataset, schedule, QuantConfig(4))

  def evaluate(arch, seed):
    result = qat(arch, seed)
    if mode == "clear_caches":
      jax.clear_caches()
    return result

  budget = Budget(model_size_bits=64 * 8 * 1024, macs=30e6, peak_activation_bytes=65536)
  ctx = strategies.SearchContext(
    MacroSpace(), budget, 4, 8, History.open(tempfile.mkdtemp())
  )
  start = time.perf_counter()
  with open(path, "w") as out:

    def on_record(record):
      if record.status in ("ok", "failed"):
        row = {
          "candidate": ctx.history.num_evaluated(),
          "rss_mb": round(rss_mb(), 1),
          "seconds": round(time.perf_counter() - start, 1),
        }
        out.write(json.dumps(row) + "\n")
        out.flush()

    run_strategy(
      ctx,
      strategies.RandomSearch(),
      evaluate,
      evaluators.Objective(),
      _CANDIDATES.value,
      jax.random.key(0),
      on_record=on_record,
    )


def main(argv):
  del argv
  out = Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  if _CHILD.value:
    child(_CHILD.value, out / f"rss_{_CHILD.value}.jsonl")
    return
  for mode in _MODES.value:
    print(f"measuring {mode} ({_CANDIDATES.value} candidates)", flush=True)
    subprocess.run(
      [sys.executable, __file__, f"--child={mode}"]
      + [f"--{f}={flags.FLAGS[f].value}" for f in ("candidates", "train_size", "out")],
      check=True,
      env=dict(os.environ),
    )
  print(
    f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs; {_TRAIN_SIZE.value} "
    f"training images per candidate\n"
  )
  marks = [m for m in MARKS if m <= _CANDIDATES.value]
  print("| mode | " + " | ".join(f"RSS @{m}" for m in marks) + " | last / @20 |")
  print("|---|" + "---|" * (len(marks) + 1))
  for mode in _MODES.value:
    rows = [json.loads(x) for x in (out / f"rss_{mode}.jsonl").read_text().splitlines()]
    by = {r["candidate"]: r["rss_mb"] for r in rows}
    cells = [f"{by[m]:.0f} MB" if m in by else "-" for m in marks]
    ratio = rows[-1]["rss_mb"] / by[20] if 20 in by else float("nan")
    print(
      f"| {mode} | " + " | ".join(cells) + f" | {ratio:.2f} ({rows[-1]['candidate']}) |"
    )


if __name__ == "__main__":
  app.run(main)
