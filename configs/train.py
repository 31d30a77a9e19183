r"""Train one architecture with QAT on the offline Fashion-MNIST.

  python experiments/train.py --config=configs/train.py --workdir=/tmp/nasq_train

Trains the reference network ``fmnist_ref`` (93K parameters) at 4-bit weights for 3
epochs on 50,000 training images and reports validation accuracy: measured 2026-12-06
(commit 8e711bb, 2 CPU cores) 3.5 minutes for the whole command, 91.75% validation
accuracy. Pick another network with
``--config.arch='conv3:s1:c16 maxpool:s2 conv3:s1:c32'`` (macro space string),
``--config.arch='|nor_conv_3x3~0|+|...'`` with ``--config.space.name=nb201``, or a
named reference network; ``--config.train.final=True`` trains on train+validation and
reports test accuracy.
"""

import ml_collections

from nasq.runs import train


def get_config() -> ml_collections.ConfigDict:
  config = train.default_config()  # every field, commented, in nasq/runs/train.py
  config.train.epochs = 3
  return config
