r"""Strategy comparison on AnalogNAS-Bench (NAS-Bench-201 cells, CIFAR-10, int8 QAT).

  pip install -e .[bench]   # or: pip install analog-nasbench==0.1.3
  python experiments/benchmarks/strategies.py --config=configs/bench_nb201.py \
      --workdir=/tmp/nasq_bench

latent_bo, random and evolution, 20 seeds x 150 queries each, in the four settings
(unconstrained; params <= 0.5 and <= 0.25 of the largest cell; MACs <= 0.5); 2
processes. Latent BO's GP models the decoded cells' one-hot tokens
(``strategies.gp_input="tokens"``, as in the search configs); ``latent_bo_codes`` is
the same strategy with the kernel on the autoencoder's codes.
"""

from nasq.runs import compare


def get_config():
  c = compare.default_config()
  c.strategy_config.gp_input = "tokens"
  c.variants.latent_bo_codes = {"gp_input": "latent"}
  return c
