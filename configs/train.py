r"""Train one architecture with QAT on the offline Fashion-MNIST.

  python experiments/train.py --config=configs/train.py --workdir=/tmp/nasq_train

Trains the reference network ``fmnist_ref`` (93K parameters) at 4-bit weights for 3
epochs on 50,000 training images and reports validation accuracy: about 3 minutes on 2
CPU cores, about 91% validation accuracy. Pick another network with
``--config.arch='conv3:s1:c16 maxpool:s2 conv3:s1:c32'`` (macro space string),
``--config.arch='|nor_conv_3x3~0|+|...'`` with ``--config.space.name=nb201``, or a
named reference network; ``--config.train.final=True`` trains on train+validation and
reports test accuracy.
"""

import ml_collections

from nasq import data, spaces, train


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Architecture: a name from nasq.spaces.macro.REFERENCE_NETWORKS, a macro-space string
  # ("conv3:s1:c32 maxpool:s2 ..."), or a NAS-Bench-201 string (with space.name=nb201).
  config.arch = "fmnist_ref"
  config.space = spaces.default_config("macro")  # Space the string is read in.
  config.weight_bits = 4  # Weight bit width: 2..8, or 32 for float.
  config.activation_bits = 8  # Activation bits for the peak-memory cost.
  config.data = data.default_config()  # Dataset and split.
  config.train = train.default_config()  # Schedule.
  config.train.epochs = 3
  return config
