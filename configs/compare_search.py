r"""The default search (``configs/default.py``) once per strategy and seed, paired by seed.

  python experiments/benchmarks/search_strategies.py --config=configs/compare_search.py \
      --workdir=/tmp/nasq_compare

Latent BO, token BO, random search and regularized evolution, seeds 0, 1, 2: twelve
searches of 20 evaluations (8 shared random initial candidates, 12 proposed), each
candidate trained 1 epoch on 12,000 images. A seed's initial design is trained once, by
its first search, and copied into the others' workdirs (the same records each would
compute). No retraining (``num_final = 0``): the comparison is over the searches' own
validation scores. Only the default's rival and latent BO (the latent-space search's
question, in the benchmarks README):

  python experiments/benchmarks/search_strategies.py --config=configs/compare_search.py \
      --config.compare_strategies="('latent_bo','token_bo')" --workdir=/tmp/nasq_compare

Rerunning with the same workdir resumes every search.
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
