r"""Strategy comparison on AnalogNAS-Bench (NAS-Bench-201 cells, CIFAR-10, int8 QAT).

  pip install -e .[bench]   # or: pip install analog-nasbench==0.1.3
  python experiments/benchmarks/strategies.py --config=configs/bench_nb201.py \
      --workdir=/tmp/nasq_bench

latent_bo, random and evolution, 20 seeds x 150 queries each, in the four settings
(unconstrained; params <= 0.5 and <= 0.25 of the largest cell; MACs <= 0.5); 2
processes. Latent BO's GP models the decoded cells' one-hot tokens
(``StrategySettings.gp_input="tokens"``, the default); ``latent_bo_codes`` is the same
strategy with the kernel on the autoencoder's codes.
"""

from nasq.runs import compare


def get_config():
  c = compare.default_config()
  # The ablations: each changes one setting of latent BO as configured here.
  c.variants.update(
    {
      "latent_bo_codes": {"gp_input": "latent"},
      "latent_bo_no_trust_region": {"trust_region": False},
      "latent_bo_observed_incumbent": {"incumbent": "observed"},
      "latent_bo_no_neighbours": {"num_neighbours": 0},
      "latent_bo_no_copula": {"output_transform": "none"},
    }
  )
  return c
