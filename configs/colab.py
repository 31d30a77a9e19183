r"""CIFAR-10 on a free Colab GPU or TPU runtime (experiments/colab_search.ipynb).

  python experiments/search.py --config=configs/colab.py --workdir=/content/nasq_c10

The papers' CIFAR setting scaled to about an hour on a free runtime: 8-bit weights, at
most 256 KB of stored weights and 100M MACs, a macro space with channels up to 128;
8 random + 24 latent-BO candidates trained for 4 epochs on a 20,000-image subset, the 2
best retrained for 30 epochs on train+validation. TFDS downloads CIFAR-10 the first
time. Each batch is split over all local devices (8 TPU cores, or 1 GPU).
"""

from nasq.runs import search


def get_config():
  config = search.default_config()
  config.space.input_shape = (32, 32, 3)
  config.space.num_classes = 10
  config.space.channels = (16, 24, 32, 48, 64, 96, 128)
  config.weight_bits = 8
  config.budget.model_size_bits = 256 * 8 * 1024
  config.budget.macs = 100e6
  config.num_initial = 8
  config.num_evaluations = 32
  config.num_final = 2
  config.data.name = "cifar10"
  config.data.source = "tfds"
  config.data.download = True
  config.data.val_size = 5_000
  # final_data follows data (its name left empty): the same data, all of it.
  config.data.train_size = 20_000
  for train in (config.train, config.final_train):
    train.optimizer = "sgd"
    train.learning_rate = 0.05
    train.num_devices = 0  # all local devices
    train.progress = False
  config.train.epochs = 4
  config.train.warmup_epochs = 0.5
  config.final_train.epochs = 30
  config.final_train.progress = True
  config.cache_dir = "/content/nasq_cache"
  return config
