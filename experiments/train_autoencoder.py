r"""Trains (or loads from the cache) an architecture autoencoder and reports its quality.

  python experiments/train_autoencoder.py --config=configs/autoencoder.py \
      --workdir=/tmp/nasq_ae
"""

from absl import app, flags, logging
from ml_collections import config_flags

from nasq.runs import autoencoder
from nasq.runs.config import run_main

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/autoencoder.py", "Autoencoder configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/nasq_ae", "Output directory.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # keep checkpointing chatter off the console
  report = run_main(autoencoder.train_and_report, _CONFIG.value, _WORKDIR.value)
  print(autoencoder.format_report(report))


if __name__ == "__main__":
  app.run(main)
