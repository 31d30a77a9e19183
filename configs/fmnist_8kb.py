r"""Flagship: a Fashion-MNIST CNN in 8 KB of 4-bit weights.

  python experiments/search.py --config=configs/fmnist_8kb.py --workdir=/tmp/nasq_8kb

The search of ``configs/fmnist_mcu.py`` (token BO over 60 candidates, successive
halving, 15 epochs of retraining, export) under a weight budget eight times tighter:
at most 8 KB of stored 4-bit weights (per-channel scales and BatchNorm parameters
included), 30M MACs and 64 KB of peak activation memory. Run end to end on 2026-12-06/07
(experiments/benchmarks/README.md, "The 8 KB flagship"): the delivered network, 7.6 kB
and 4.2M MACs, 90.83% test (2 seeds), 0.17 points short of the 91% target.
"""

from nasq.runs.config import sibling_config


def get_config():
  config = sibling_config(__file__, "fmnist_mcu.py")
  config.budget.model_size_bits = 8 * 8 * 1024  # 8 KB of weights
  config.reference = ""  # no hand-designed network of this size ships with nasq
  return config
