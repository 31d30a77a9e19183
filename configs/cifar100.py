r"""CIFAR-100 with the papers' budgets, for a GPU machine with the dataset prepared.

  python experiments/search.py --config=configs/cifar100.py --workdir=/tmp/nasq_c100 \
      --config.data.data_dir=/path/to/tensorflow_datasets

Budgets as in LBQ-NAS on CIFAR-100: fewer than 2.5M parameters and 600M operations
(counted here as multiply-accumulates). A larger macro space (channels up to 256), 20
initial + 80 BO candidates trained for 15 epochs each, the 3 best retrained for 100
epochs on train+validation. Hours on one GPU; not meant for a CPU. Set
``data.download=True`` to let TFDS fetch and prepare CIFAR-100 first.
"""

from nasq.runs import search


def get_config():
  config = search.default_config()
  config.space.input_shape = (32, 32, 3)
  config.space.num_classes = 100
  config.space.channels = (16, 32, 48, 64, 96, 128, 192, 256)
  config.space.max_layers = 12
  config.weight_bits = 8
  config.budget.model_size_bits = None
  config.budget.params = 2.5e6
  config.budget.macs = 600e6
  config.num_initial = 20
  config.num_evaluations = 100
  config.num_final = 3
  config.data.name = "cifar100"
  config.data.source = "tfds"
  config.data.val_size = 5_000
  # final_data follows data (its name left empty): the same data, all of it.
  config.train.epochs = 15
  config.train.optimizer = "sgd"
  config.train.learning_rate = 0.05
  config.train.progress = False
  config.final_train.epochs = 100
  config.final_train.optimizer = "sgd"
  config.final_train.learning_rate = 0.05
  return config
