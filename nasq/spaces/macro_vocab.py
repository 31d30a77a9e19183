"""The vocabulary of the macro space: layer operations, layers, architectures, the
space's settings and the named reference networks. The rules that make a sequence of
layers valid, and the token form, live in ``nasq.spaces.macro``."""

from __future__ import annotations

import dataclasses

# Operation name -> (kind, kernel size). The space's config picks a subset.
KNOWN_OPS: dict[str, tuple[str, int]] = {
  "conv1": ("conv", 1),
  "conv3": ("conv", 3),
  "conv5": ("conv", 5),
  "conv7": ("conv", 7),
  "dwsep3": ("dwsep", 3),
  "dwsep5": ("dwsep", 5),
  "dwsep7": ("dwsep", 7),
  "maxpool": ("maxpool", 0),
  "avgpool": ("avgpool", 0),
}
WEIGHTED_KINDS = ("conv", "dwsep")
KNOWN_ACTIVATIONS = ("relu", "relu6", "silu")
KNOWN_WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8, 32)


def pool_window(stride: int) -> int:
  """Pooling window: 2x2 when downsampling by 2 (the classic choice), else 3x3."""
  return 2 if stride == 2 else 3


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer of a macro architecture.

  Attributes:
    op: an operation name from ``KNOWN_OPS``.
    stride: spatial stride.
    channels: output channels (for pooling: the input channel count, kept).
    residual: whether the input is added to the output.
    weight_bits: the layer's own weight bit width, or None to use the model-wide width.
  """

  op: str
  stride: int
  channels: int
  residual: bool = False
  weight_bits: int | None = None

  @property
  def kind(self) -> str:
    return KNOWN_OPS[self.op][0]

  @property
  def kernel_size(self) -> int:
    k = KNOWN_OPS[self.op][1]
    return k if k else pool_window(self.stride)

  def to_string(self) -> str:
    parts = [self.op, f"s{self.stride}"]
    if self.kind in WEIGHTED_KINDS:
      parts.append(f"c{self.channels}")
    if self.residual:
      parts.append("res")
    if self.weight_bits is not None:
      parts.append(f"w{self.weight_bits}")
    return ":".join(parts)


@dataclasses.dataclass(frozen=True)
class MacroArchitecture:
  """A sequential CNN: ``layers``, then global average pooling and a classifier."""

  layers: tuple[Layer, ...]
  input_shape: tuple[int, int, int]
  num_classes: int
  activation: str = "relu"

  def to_string(self) -> str:
    return " ".join(layer.to_string() for layer in self.layers)

  def shapes(self) -> list[tuple[int, int, int]]:
    """Activation shapes (H, W, C): the input, then after each layer."""
    h, w, c = self.input_shape
    out = [(h, w, c)]
    for layer in self.layers:
      h, w = -(-h // layer.stride), -(-w // layer.stride)
      if layer.kind in WEIGHTED_KINDS:
        c = layer.channels
      out.append((h, w, c))
    return out


@dataclasses.dataclass(frozen=True)
class MacroSpaceConfig:
  """The macro space (the ``space`` section): Fashion-MNIST-sized inputs by default."""

  name: str = "macro"
  input_shape: tuple[int, ...] = (28, 28, 1)  # (height, width, channels) of the images.
  num_classes: int = 10  # Classifier outputs.
  min_layers: int = 2  # Fewest layers before global pooling.
  max_layers: int = 12  # Most layers before global pooling.
  # Layer operations to choose from (names from nasq.spaces.macro.KNOWN_OPS).
  ops: tuple[str, ...] = (
    "conv1",
    "conv3",
    "conv5",
    "conv7",
    "dwsep3",
    "dwsep5",
    "maxpool",
    "avgpool",
  )
  channels: tuple[int, ...] = (
    8,
    16,
    24,
    32,
    48,
    64,
  )  # Output channels of weighted layers.
  strides: tuple[int, ...] = (1, 2)  # Spatial strides.
  residual: bool = True  # Allow residual connections where shapes allow.
  activation: str = "relu"  # Activation after every BatchNorm (relu, relu6, silu).
  # Per-layer weight bit widths to search (mixed precision), or None for one width.
  weight_bits_choices: tuple[int, ...] | None = None


# Named reference networks: (input shape, classes, architecture string).
REFERENCE_NETWORKS: dict[str, tuple[tuple[int, int, int], int, str]] = {
  # 93K parameters; the Fashion-MNIST QAT reference (benchmarks/qat_reference.py).
  "fmnist_ref": (
    (28, 28, 1),
    10,
    "conv3:s1:c32 conv3:s1:c32 maxpool:s2 conv3:s1:c64 "
    "conv3:s1:c64 maxpool:s2 conv3:s1:c48",
  ),
  # A 6-conv CIFAR-size network (benchmarks/train_throughput.py).
  "cifar_ref": (
    (32, 32, 3),
    10,
    "conv3:s1:c32 conv3:s1:c32 maxpool:s2 conv3:s1:c64 "
    "conv3:s1:c64 maxpool:s2 conv3:s1:c128 conv3:s1:c128",
  ),
}


__all__ = [
  "KNOWN_ACTIVATIONS",
  "KNOWN_OPS",
  "KNOWN_WEIGHT_BITS",
  "REFERENCE_NETWORKS",
  "WEIGHTED_KINDS",
  "Layer",
  "MacroArchitecture",
  "MacroSpaceConfig",
  "pool_window",
]
