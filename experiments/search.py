r"""Searches for the most accurate quantized CNNs that fit the configured budgets.

  python experiments/search.py --config=configs/default.py --workdir=/tmp/nasq_search

Writes the history, report.md (retrained models and their costs), Pareto fronts,
best-so-far curves, TensorBoard metrics and the best model's checkpoint to the workdir.
A rerun with the same workdir resumes.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from nasq.runs import search
from nasq.runs.config import run_main

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/default.py", "Search configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/nasq_search", "Output directory.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # keep checkpointing chatter off the console
  config = _CONFIG.value
  if config.sweep_weight_bits:
    run_main(search.run_sweep, config, _WORKDIR.value)
    print(f"combined front: {_WORKDIR.value}/fronts_by_bits.png")
  else:
    run_main(search.run_search, config, _WORKDIR.value)
    print(open(f"{_WORKDIR.value}/report.md").read())


if __name__ == "__main__":
  app.run(main)
