r"""Flagship: a Fashion-MNIST CNN in 8 KB of 4-bit weights.

  python experiments/search.py --config=configs/fmnist_8kb.py --workdir=/tmp/nasq_8kb

The search of ``configs/fmnist_mcu.py`` (latent BO over 60 candidates, successive
halving, 15 epochs of retraining, export) under a weight budget eight times tighter:
at most 8 KB of stored 4-bit weights (per-channel scales and BatchNorm parameters
included), 30M MACs and 64 KB of peak activation memory.
"""

from nasq.runs import search


def get_config():
  config = search.default_config()
  config.strategy = "latent_bo"
  config.weight_bits = 4
  config.num_initial = 20
  config.num_evaluations = 60
  config.num_final = 2
  config.budget.model_size_bits = 8 * 8 * 1024  # 8 KB of weights
  config.budget.macs = 30e6
  config.budget.peak_activation_bytes = 64 * 1024  # 64 KB of RAM for activations
  for data in (config.data, config.final_data):
    data.name = "fashion_mnist"
    data.source = "idx"
  config.data.train_size = 6_000
  config.train.epochs = 1
  config.train.warmup_epochs = 0.1
  config.train.progress = False
  config.promotion.rungs = "3x12000,1x0"
  config.final_train.epochs = 15
  config.final_train.progress = True
  config.reference = ""  # no hand-designed network of this size ships with nasq
  config.export = True
  return config
