r"""The default search (``configs/default.py``) once per strategy and seed, paired by seed.

  python experiments/benchmarks/search_strategies.py --config=configs/compare_search.py \
      --workdir=/tmp/nasq_compare

Latent BO, token BO, random search and regularized evolution, seeds 0, 1, 2: twelve
searches of 20
evaluations (8 shared random initial candidates, 12 proposed), 7-10 minutes each on
2 CPU cores (the default search's own part took 7.0 minutes at commit 67c2c57); no retraining (``num_final = 0``): the comparison is over the searches' own
validation scores. Rerunning with the same workdir resumes every search.
"""

import importlib.util
from pathlib import Path

from nasq.runs import search_compare


def get_config():
  # Config files are loaded by path, not as a package: load the sibling the same way.
  path = Path(__file__).with_name("default.py")
  spec = importlib.util.spec_from_file_location("default", path)
  default = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(default)
  config = default.get_config()
  config.num_final = 0
  return search_compare.add_fields(config)
