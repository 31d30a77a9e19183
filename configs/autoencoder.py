r"""Train the architecture autoencoder of the default macro space and report its quality.

  python experiments/train_autoencoder.py --config=configs/autoencoder.py \
      --workdir=/tmp/nasq_ae

About 5 minutes on 2 CPU cores the first time (99.6% of 10,000 held-out architectures
reconstructed exactly); later runs with the same space and autoencoder config load it
from ``cache_dir``. For NAS-Bench-201 use ``configs/autoencoder_nb201.py``.
"""

from nasq.runs import autoencoder


def get_config():
  return autoencoder.default_config()
