r"""The default search: Fashion-MNIST (offline), 4-bit weights, microcontroller budgets.

  python experiments/search.py --config=configs/default.py --workdir=/tmp/nasq_search

Budgets: at most 64 KB of stored weights and 30M MACs per image (the bounds uNAS uses
for Fashion-MNIST). Trains the latent-space autoencoder once (about 5 minutes on 2 CPU
cores; cached in ``cache_dir`` afterwards), evaluates 10 random feasible architectures
and 20 proposed by latent BO (each trained for 2 epochs on 10,000 images), then retrains
the 2 best on all 60,000 training images for 5 epochs and reports test accuracy. About
20 minutes on 2 CPU cores in all. Rerunning with the same workdir resumes.

Variants: ``--config.strategy=random`` or ``evolution``; ``--config.sweep_weight_bits=
(32,8,4)`` runs one search per bit width into ``workdir/bits<b>`` and draws their
combined accuracy-vs-size front.
"""

from nasq import search


def get_config():
  config = search.default_config()
  config.strategy = "latent_bo"
  config.num_initial = 10
  config.num_evaluations = 30
  config.num_final = 2
  config.weight_bits = 4
  config.budget.model_size_bits = 64 * 8 * 1024  # 64 KB of weights
  config.budget.macs = 30e6
  config.data.name = "fashion_mnist"
  config.data.source = "idx"
  config.data.train_size = 10_000  # candidates see a 10k-image subset ...
  config.train.epochs = 2  # ... for 2 epochs: a cheap, ranking-preserving signal
  config.train.progress = False
  config.final_data.name = "fashion_mnist"
  config.final_data.source = "idx"
  config.final_train.epochs = 5  # the retrained models: all 60k images, 5 epochs
  config.final_train.progress = True
  return config
