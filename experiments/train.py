r"""Trains one architecture with quantization-aware training.

  python experiments/train.py --config=configs/train.py --workdir=/tmp/nasq_train \
      --config.arch='conv3:s1:c16 maxpool:s2 conv3:s1:c32' --config.weight_bits=8
"""

from absl import app, flags, logging
from ml_collections import config_flags

from nasq.runs import train
from nasq.runs.config import run_main

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/train.py", "Training configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/nasq_train", "Output directory.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # keep checkpointing chatter off the console
  result = run_main(train.train_one, _CONFIG.value, _WORKDIR.value)
  return 0 if result.status == "ok" else 1


if __name__ == "__main__":
  app.run(main)
