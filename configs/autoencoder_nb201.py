r"""The autoencoder of the NAS-Bench-201 space (all 15,625 cells).

  python experiments/train_autoencoder.py --config=configs/autoencoder_nb201.py \
      --workdir=/tmp/nasq_ae_nb201

About 1.5 minutes on 2 CPU cores; every cell reconstructs exactly.
"""

from nasq.runs import autoencoder
from nasq.runs.config import to_config
from nasq.spaces import space_config


def get_config():
  config = autoencoder.default_config()
  config.space = to_config(space_config("nb201"))
  config.autoencoder.latent_dim = 8  # 15,625 cells need far fewer dimensions.
  config.autoencoder.steps = 2000
  return config
