r"""Flagship, mixed precision: ``configs/fmnist_mcu.py`` with per-layer weight bits.

  python experiments/search.py --config=configs/fmnist_mcu_mixed.py \
      --workdir=/tmp/nasq_mcu_mixed

The same search, budgets (64 KB of weights, 30M MACs, 64 KB of peak activations),
candidate count (60), schedule and retraining as the uniform 4-bit flagship, except
that every weighted layer chooses its own weight bit width from 2, 4 and 8 (layers read
``conv3:s1:c32:w4``; the model size counts each layer at its own width). Its Pareto
front against the uniform run's, at equal candidate count, says whether per-layer bit
widths move the front. The space's vocabulary differs, so it trains its own
autoencoder (14.5 minutes on 2 CPU cores, 2026-12-07, about half of them beside a test
run: a layer has five tokens here, not four; cached afterwards). No reference network
is retrained here: the uniform run carries fmnist_ref.
"""

from nasq.runs.config import sibling_config


def get_config():
  config = sibling_config(__file__, "fmnist_mcu.py")
  config.space.weight_bits_choices = (2, 4, 8)
  config.reference = ""
  return config
