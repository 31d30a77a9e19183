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

from nasq.runs import search_compare
from nasq.runs.config import sibling_config


def get_config():
  config = sibling_config(__file__, "default.py")
  config.num_final = 0
  return search_compare.add_fields(config)
