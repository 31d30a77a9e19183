"""The autoencoder's settings (the ``autoencoder`` section of a config)."""

from __future__ import annotations

import dataclasses

TARGETS = ("log_params", "log_macs")  # what the convex cost predictor predicts
ENCODERS = ("mlp", "additive")
DISTRIBUTIONS = ("uniform", "depth_uniform")


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
  """Model and training of the architecture autoencoder (see experiments/train_autoencoder.py)."""

  # Dimension of the latent space the search runs in. The default macro space holds
  # 4e22 architectures (about 75 bits): 16 dimensions reconstruct only ~90% of held-out
  # networks exactly, 32 reach the 99% target (experiments/benchmarks/README.md,
  # "Architecture autoencoder quality").
  latent_dim: int = 32
  embed_dim: int = 32  # Token embedding size (encoder) and prefix summary size (decoder).
  hidden: int = 256  # Width of the encoder and decoder MLPs.
  encoder_layers: int = 2  # Hidden layers of the encoder MLP.
  # "mlp": z = MLP(token embeddings). "additive": z = sum of per-position latent
  # embeddings, and the decoder also sees the part of z its decoded prefix explains.
  encoder: str = "additive"
  decoder_layers: int = 2  # Hidden layers of the decoder MLP.
  predictor_hidden: tuple[int, ...] = (128, 128)  # Hidden widths of the cost predictor.
  mmd_weight: float = 10.0  # lambda of the MMD penalty (the WAE paper's value).
  # IMQ kernel scales, as multiples of 2 * latent_dim (the WAE paper's set).
  mmd_scales: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
  predictor_weight: float = 10.0  # Weight of the cost predictor's squared error.
  # Training architectures: "depth_uniform" (macro: every depth equally often) or
  # "uniform" over the space. NAS-Bench-201 always trains on all 15,625 cells.
  distribution: str = "depth_uniform"
  num_train: int = 200_000  # Architectures sampled for training (macro).
  num_holdout: int = 10_000  # Held-out architectures for the quality report (macro).
  batch_size: int = 256
  steps: int = 6000  # Optimizer steps.
  learning_rate: float = 2e-3  # Peak of a warmup-cosine schedule (Adam).
  warmup_steps: int = 200
  seed: int = 0

  def __post_init__(self):
    """Raises ``ValueError`` naming the first bad field."""
    positive = ("latent_dim", "embed_dim", "hidden", "batch_size", "steps", "num_train")
    for field in positive:
      if int(getattr(self, field)) < 1:
        raise ValueError(f"autoencoder.{field} must be >= 1, got {getattr(self, field)}")
    for field in ("encoder_layers", "decoder_layers", "num_holdout", "warmup_steps"):
      if int(getattr(self, field)) < 0:
        raise ValueError(f"autoencoder.{field} must be >= 0, got {getattr(self, field)}")
    for field in ("mmd_weight", "predictor_weight"):
      if float(getattr(self, field)) < 0:
        raise ValueError(f"autoencoder.{field} must be >= 0, got {getattr(self, field)}")
    if not self.predictor_hidden or min(self.predictor_hidden) < 1:
      raise ValueError(
        f"autoencoder.predictor_hidden must be a non-empty tuple of positive widths, "
        f"got {self.predictor_hidden}"
      )
    if self.encoder not in ENCODERS:
      raise ValueError(
        f"autoencoder.encoder must be one of {list(ENCODERS)}, got {self.encoder!r}"
      )
    if self.distribution not in DISTRIBUTIONS:
      raise ValueError(
        f"autoencoder.distribution must be one of {list(DISTRIBUTIONS)}, got "
        f"{self.distribution!r}"
      )
