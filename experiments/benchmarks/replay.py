r"""Trains records of a finished search again on this machine: does its signal hold here?

  python experiments/benchmarks/replay.py --config=configs/fmnist_mcu.py \
      --workdir=experiments/benchmarks/data/flagship_fmnist_mcu --records=60,67,73 \
      --out=/tmp/replay_mcu.jsonl

One-epoch validation accuracies depend on the host CPU (up to 0.03 apart between
machines of one kind), so two searches run on different machines compare only after
this check. Each record (a search evaluation, fidelity 0) is trained exactly as the
search trained it: the config must be the search's own (checked against the workdir's
``config.json``), the data, training and quantization settings are its, the seed the
record's. Prints the recorded and the new validation accuracy side by side, with this
machine's CPU; with ``--out`` the lines are appended there and a rerun trains only the
records not yet in it.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from nasq import data as data_lib
from nasq import evaluators
from nasq.runs import record, retrain, search
from nasq.runs.config import run_main, user_errors
from nasq.spaces import make_space

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/fmnist_mcu.py", "The search's configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The finished search.")
_RECORDS = flags.DEFINE_list("records", [], "Record indices of its history.")
_OUT = flags.DEFINE_string("out", "", "A JSON-lines file the results are appended to.")


def _replay() -> list[dict]:
  with user_errors():
    workdir = Path(_WORKDIR.value or "")
    settings, history = retrain.open_finished(_CONFIG.value, workdir)
    chosen = retrain.successful_records(history, _RECORDS.value, fidelity=0)
    dataset = data_lib.load_dataset(settings.data)
    space = make_space(search.for_dataset(settings, dataset).space)
  out = Path(_OUT.value) if _OUT.value else None
  done = {
    (row["workdir"], row["index"]): row for row in (record.read(out) if out else [])
  }
  evaluate = evaluators.QATEvaluator(dataset, settings.train, settings.quantization)
  cpu, rows = record.cpu_model(), []
  for r in chosen:
    row = done.get((str(workdir), r.index))
    if row is None:
      result = evaluate(space.decode(r.tokens), r.seed)
      row = {
        "workdir": str(workdir),
        "index": r.index,
        "arch": r.arch,
        "seed": r.seed,
        "recorded": r.metrics["val_accuracy"],
        "now": result.metrics["val_accuracy"],
        "status": result.status,
        "seconds": round(result.seconds, 1),
        "cpu": cpu,
      }
      if out is not None:
        record.append(out, row)
    rows.append(row)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  rows = run_main(_replay)
  print(f"{_WORKDIR.value}, replayed on: {record.cpu_model()}\n")
  print("| record | seed | recorded | now | now - recorded | seconds | architecture |")
  print("|---:|---:|---:|---:|---:|---:|---|")
  diffs = []
  for row in rows:
    now = row["now"]
    diff = "" if now is None else f"{now - row['recorded']:+.4f}"
    if now is not None:
      diffs.append(now - row["recorded"])
    print(
      f"| {row['index']} | {row['seed']} | {row['recorded']:.4f} | "
      f"{'failed' if now is None else f'{now:.4f}'} | {diff} | {row['seconds']} | "
      f"`{row['arch']}` |"
    )
  if diffs:
    print(
      f"\n{len(diffs)} records: median difference {statistics.median(diffs):+.4f}, "
      f"largest {max(diffs, key=abs):+.4f}"
    )


if __name__ == "__main__":
  app.run(main)
