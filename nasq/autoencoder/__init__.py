"""The architecture autoencoder: a Wasserstein autoencoder over a space's token vectors.

As in LBQ-NAS, whole architectures are embedded in a small continuous latent space where
the search runs. Three parts are trained jointly on architectures sampled from the space
(no image data):

* **Encoder**: token vector -> latent point ``z`` (deterministic, as in a WAE). Tokens are
  embedded per position, concatenated and mapped by an MLP.
* **Decoder**: autoregressive over the space's blocks (a layer of the macro space, an edge
  of a NAS-Bench-201 cell). Block ``b`` is predicted from ``z``, a summary of the blocks
  already decoded (the sum of their embeddings) and the block's position. It scores every
  *valid* option of the block in the current state of the space's ``BlockAutomaton`` (the
  sum of per-token logits), so decoding is valid by construction: every latent point maps
  to an architecture of the space. The reconstruction loss is the cross-entropy over those
  same valid options.
* **Cost predictor**: a fully input convex neural network (FICNN, Amos, Xu & Kolter 2017)
  on ``z`` predicting standardized log(params) and log(MACs). Convex in ``z``, so a budget
  on its prediction is a convex region of the latent space; its loss shapes the latent
  space as in the paper.

The latent codes are pulled towards the N(0, I) prior by an MMD penalty with the inverse
multiquadratic kernel over several scales (Tolstikhin et al. 2018).

A trained autoencoder is cached in ``cache_dir`` under a key derived from the space config
and the autoencoder config (see ``load_or_train``).

Rooms: ``config`` (settings), ``model`` (modules, decoding, the trained artifact),
``train`` (data, losses, loop), ``quality`` (what it is judged by), ``cache``.
"""

from nasq.autoencoder.cache import (
  FORMAT_VERSION,
  AutoencoderCacheError,
  cache_key,
  cache_path,
  load,
  load_or_train,
  save,
)
from nasq.autoencoder.config import TARGETS, AutoencoderConfig
from nasq.autoencoder.model import (
  FICNN,
  ArchitectureAutoencoder,
  NonNegDense,
  TrainedAutoencoder,
  TrainingTables,
  build_model,
  greedy_decode,
  option_scores,
)
from nasq.autoencoder.quality import (
  convexity_violation,
  quality_report,
  r_squared,
  reconstruction,
)
from nasq.autoencoder.train import (
  ArchitectureData,
  FineTuner,
  loss_fn,
  make_data,
  mmd_imq,
  rank_weights,
  train,
  training_data,
)

__all__ = [
  "FICNN",
  "FORMAT_VERSION",
  "TARGETS",
  "ArchitectureAutoencoder",
  "ArchitectureData",
  "AutoencoderCacheError",
  "AutoencoderConfig",
  "FineTuner",
  "NonNegDense",
  "TrainedAutoencoder",
  "TrainingTables",
  "build_model",
  "cache_key",
  "cache_path",
  "convexity_violation",
  "greedy_decode",
  "load",
  "load_or_train",
  "loss_fn",
  "make_data",
  "mmd_imq",
  "option_scores",
  "quality_report",
  "r_squared",
  "rank_weights",
  "reconstruction",
  "save",
  "train",
  "training_data",
]
