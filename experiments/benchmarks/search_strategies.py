r"""Latent BO, random search and evolution on the real search, paired by seed.

  python experiments/benchmarks/search_strategies.py --config=configs/compare_search.py \
      --workdir=/tmp/nasq_compare

Writes search_table.md (per seed: best validation score, the initial design's and the
proposals' mean scores, fallbacks) and search_results.json to the workdir; each search's
own history and report are under workdir/<strategy>/seed<k>. A rerun resumes.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from nasq.runs import search_compare
from nasq.runs.config import run_main

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/compare_search.py", "Comparison configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/nasq_compare", "Output directory.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  run_main(search_compare.compare_searches, _CONFIG.value, _WORKDIR.value)
  print(open(f"{_WORKDIR.value}/search_table.md").read())


if __name__ == "__main__":
  app.run(main)
