r"""Strategy comparison on AnalogNAS-Bench (NAS-Bench-201 cells, CIFAR-10, int8 QAT).

  pip install -e .[bench]   # or: pip install analog-nasbench==0.1.3
  python experiments/benchmarks/strategies.py --config=configs/bench_nb201.py \
      --workdir=/tmp/nasq_bench

latent_bo, token_bo, lbq_nas, random and evolution, 20 seeds x 150 queries each, in
the four settings (unconstrained; params <= 0.5 and <= 0.25 of the largest cell; MACs
<= 0.5); 2 processes. The variants below are the ablations of latent BO (each changes
one setting) and of token BO.
"""

from nasq.runs import compare


def get_config():
  c = compare.default_config()
  c.variants.update(
    {
      # Latent BO without its trust region (the pool spans the box), with the GP on
      # codes instead of tokens or beside them, with TuRBO's failure tolerance (max(4, d): 8 failures
      # in a row on this 8-dimensional autoencoder) instead of 4, with the noisy
      # observed incumbent, without the copula transform.
      "latent_bo_no_trust_region": {"trust_region": False},
      "latent_bo_codes_gp": {"gp_input": "latent"},
      "latent_bo_codes_and_tokens": {"gp_input": "both"},
      "latent_bo_turbo_tolerance": {"tr_failure_tol": 0},
      "latent_bo_observed_incumbent": {"incumbent": "observed"},
      "latent_bo_no_copula": {"output_transform": "none"},
      # Latent BO with weighted retraining of the autoencoder every 10 evaluations.
      "latent_bo_retrained": {"retrain_every": 10},
      # Token BO without its one-token neighbours (candidates from the latent space
      # only) and with latent BO's adaptive trust region.
      "token_bo_no_neighbours": {"strategy": "token_bo", "num_neighbours": 0},
      "token_bo_adaptive": {"strategy": "token_bo", "tr_failure_tol": 4},
    }
  )
  return c
