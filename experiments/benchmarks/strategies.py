r"""Compares search strategies on a benchmark table (see configs/bench_nb201.py).

  python experiments/benchmarks/strategies.py --config=configs/bench_nb201.py \
      --workdir=/tmp/nasq_bench

Writes table.md (best value after 10/25/50/100/150 queries, regret, fraction of seeds
that found the table's best), results.json and curves_<setting>.png to the workdir.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from nasq.runs import compare
from nasq.runs.config import run_main

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/bench_nb201.py", "Benchmark configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/nasq_bench", "Output directory.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  run_main(compare.compare_strategies, _CONFIG.value, _WORKDIR.value)
  print(open(f"{_WORKDIR.value}/table.md").read())


if __name__ == "__main__":
  app.run(main)
