r"""The default search: Fashion-MNIST (offline), 4-bit weights, microcontroller budgets.

  python experiments/search.py --config=configs/default.py --workdir=/tmp/nasq_search

Budgets: at most 64 KB of stored weights, 30M MACs per image and 64 KB of peak
activation memory at 8-bit activations (the bounds uNAS uses for Fashion-MNIST on a
microcontroller with 64 KB of RAM). Trains the latent-space autoencoder once (about 4
minutes on 2 CPU cores; cached in ``cache_dir`` afterwards), evaluates 8 random
feasible architectures and 12 proposed by token BO (``token_bo``: the search called
latent BO until 2026-12-06; the default because its best was above latent BO's in 2 of 3
paired seeds of this search, experiments/benchmarks/README.md), each trained for 1 epoch on 12,000 images, then retrains the 2
best for 1 epoch on all 60,000 training images and reports test accuracy. The
candidates' signal is the cheapest one that ranks architectures of this space at
Spearman >= 0.85 against 10 epochs on 60,000 images (0.87, against 0.68 for 1 epoch on
6,000 images, for 1.3x its seconds: the fidelity table in
experiments/benchmarks/README.md). Wall time and result: the README's Results. Rerunning
with the same workdir resumes.

Variants: ``--config.strategy=latent_bo``, ``lbq_nas``, ``random`` or ``evolution``; ``--config.sweep_weight_bits=
(32,8,4)`` runs one search per bit width into ``workdir/bits<b>`` and draws their
combined accuracy-vs-size front.
"""

from nasq.runs import search


def get_config():
  config = search.default_config()
  config.strategy = "token_bo"
  config.num_initial = 8
  config.num_evaluations = 20
  config.num_final = 2
  config.weight_bits = 4
  config.budget.model_size_bits = 64 * 8 * 1024  # 64 KB of weights
  config.budget.macs = 30e6
  config.budget.peak_activation_bytes = 64 * 1024  # 64 KB of RAM for activations
  config.data.name = "fashion_mnist"
  config.data.train_size = 12_000  # candidates see a 12k-image subset ...
  config.train.epochs = 1  # ... for 1 epoch: Spearman 0.87 against 10 epochs on 60k
  config.train.warmup_epochs = 0.1  # (the default 1-epoch warmup would fill the epoch)
  config.train.progress = False
  config.final_train.epochs = 1  # the retrained models: all 60k images, 1 epoch
  config.final_train.warmup_epochs = 0.1
  config.final_train.progress = True
  return config
