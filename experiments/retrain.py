r"""Retrains chosen networks of a finished search with its final recipe.

  python experiments/retrain.py --config=configs/fmnist_mcu.py \
      --workdir=/tmp/nasq_mcu --within_kb=50          # the best record <= 50 KB
  python experiments/retrain.py --config=configs/fmnist_mcu.py \
      --workdir=/tmp/nasq_mcu --records=63,67 --seeds=1

The search retrains only its best few; this answers questions about the rest of its
Pareto front, such as "does a smaller found network beat the hand-written reference?",
under the identical recipe: the config must be the search's own (checked against the
workdir's config.json), the seeds are the ones the finalists get, and the lines go to
``<workdir>/retrained.jsonl`` (what the search delivered is untouched). Resumable: a
rerun trains only the missing (record, seed) pairs. Prints the retrained networks beside
the search's finalists and its reference.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from nasq import report
from nasq.runs import retrain
from nasq.runs.config import ConfigError, run_main

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/fmnist_mcu.py", "The search's configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/nasq_mcu", "The finished search.")
_RECORDS = flags.DEFINE_list("records", [], "Record indices of its history.")
_WITHIN_KB = flags.DEFINE_float(
  "within_kb", 0.0, "Instead of --records: the best records with at most this many KB."
)
_COUNT = flags.DEFINE_integer("count", 1, "With --within_kb: how many of the best.")
_SEEDS = flags.DEFINE_integer("seeds", 0, "Seeds per network (0: final_seeds).")


def _retrain():
  try:
    records = tuple(int(i) for i in _RECORDS.value)
  except ValueError:
    raise ConfigError(f"records: integers, got {_RECORDS.value}") from None
  return retrain.retrain_chosen(
    _CONFIG.value,
    _WORKDIR.value,
    records=records,
    within_kb=_WITHIN_KB.value,
    count=_COUNT.value,
    num_seeds=_SEEDS.value,
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  result = run_main(_retrain)
  rows = [("retrained", e) for e in result["retrained"]]
  rows += [("finalist", e) for e in result["finals"]]
  if result["reference"]:
    rows.append(("reference", result["reference"]))
  print("| network | record | KB of weights | M MACs | test accuracy | architecture |")
  print("| --- | ---: | ---: | ---: | --- | --- |")
  for kind, e in rows:
    kb = e["costs"]["model_size_bits"] / 8 / 1024
    macs = e["costs"]["macs"] / 1e6
    index = e.get("index", "")
    accuracy = report.accuracy_text(e)
    print(f"| {kind} | {index} | {kb:.1f} | {macs:.1f} | {accuracy} | `{e['arch']}` |")


if __name__ == "__main__":
  app.run(main)
