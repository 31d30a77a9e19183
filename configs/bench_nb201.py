r"""Strategy comparison on AnalogNAS-Bench (NAS-Bench-201 cells, CIFAR-10, int8 QAT).

  pip install -e .[bench]   # or: pip install analog-nasbench==0.1.3
  python experiments/benchmarks/strategies.py --config=configs/bench_nb201.py \
      --workdir=/tmp/nasq_bench

latent_bo, random and evolution, 20 seeds x 150 queries each, unconstrained and under a
budget of half the largest cell's parameters; 2 processes.
"""

from nasq.runs import compare


def get_config():
  return compare.default_config()
