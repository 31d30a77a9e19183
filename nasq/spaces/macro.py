"""The macro space: whole sequential CNNs, as in the LBQ-NAS papers.

An architecture is a sequence of 1..``max_layers`` layers followed by global average
pooling and a dense classifier. Every layer is one of:

* ``convK``  (K in 1, 3, 5, 7): KxK convolution -> BatchNorm -> activation.
* ``dwsepK`` (K in 3, 5, 7): depthwise KxK -> BN -> act -> pointwise 1x1 -> BN -> act.
* ``maxpool`` / ``avgpool``: 2x2 window at stride 2, 3x3 window at stride 1; keeps the
  channel count. Padding is SAME everywhere (output size ``ceil(size / stride)``).

Weighted layers choose their output channels from a configured list and, when
``residual`` is enabled, may add their input to their output (only where the shapes
allow: stride 1 and equal channel counts). With ``weight_bits_choices`` set, each
weighted layer also carries its own weight bit width (mixed precision).

Token layout: ``fields_per_layer`` tokens per layer, in the order
``(op, stride, channels, residual[, bits])``. Index 0 of ``op`` ends the network; every
field of the layers after the end is 0 (padding). Index 0 of ``channels`` and ``bits``
means "not applicable" (pooling layers, padding). The canonical form is unique: a token
vector that breaks any of these rules is rejected by ``decode``, never silently fixed.

Validity rules (the only ones): depth within ``[min_layers, max_layers]``; a layer with
stride s needs an input of at least s pixels in height and width (the resolution never
collapses); residual only where shapes allow.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

import numpy as np

from nasq.spaces.base import (
  BlockAutomaton,
  InvalidArchitectureError,
  TokenSpace,
  build_automaton,
)
from nasq.spaces.macro_vocab import (
  KNOWN_ACTIVATIONS,
  KNOWN_OPS,
  KNOWN_WEIGHT_BITS,
  REFERENCE_NETWORKS,
  WEIGHTED_KINDS,
  Layer,
  MacroArchitecture,
  MacroSpaceConfig,
)


class MacroSpace(TokenSpace):
  """Sequential CNNs with a configurable layer vocabulary (see module docstring)."""

  name = "macro"
  exportable = True  # sequential CNNs: LiteRT int8/int4 and ONNX (nasq.export)

  def __init__(self, config: MacroSpaceConfig | None = None):
    config = MacroSpaceConfig() if config is None else config
    self.config = config
    self.input_shape = tuple(int(v) for v in config.input_shape)
    if len(self.input_shape) != 3 or min(self.input_shape) < 1:
      raise ValueError(
        f"space.input_shape must be (height, width, channels) of positive ints, got "
        f"{tuple(config.input_shape)}"
      )
    self.num_classes = int(config.num_classes)
    if self.num_classes < 2:
      raise ValueError(f"space.num_classes must be >= 2, got {self.num_classes}")
    self.min_layers, self.max_layers = int(config.min_layers), int(config.max_layers)
    if not 1 <= self.min_layers <= self.max_layers:
      raise ValueError(
        f"space.min_layers/max_layers must satisfy 1 <= min_layers <= max_layers, got "
        f"{self.min_layers}, {self.max_layers}"
      )
    self.ops = tuple(config.ops)
    unknown = [op for op in self.ops if op not in KNOWN_OPS]
    if unknown or not self.ops or len(set(self.ops)) != len(self.ops):
      raise ValueError(
        f"space.ops must be distinct names from {sorted(KNOWN_OPS)}, got {self.ops}"
      )
    self.channels = tuple(int(c) for c in config.channels)
    if not self.channels or min(self.channels) < 1:
      raise ValueError(f"space.channels must be positive ints, got {self.channels}")
    self.strides = tuple(int(s) for s in config.strides)
    if not self.strides or not set(self.strides) <= {1, 2}:
      raise ValueError(
        f"space.strides must be a non-empty subset of (1, 2), got {self.strides}"
      )
    self.residual = bool(config.residual)
    if config.activation not in KNOWN_ACTIVATIONS:
      raise ValueError(
        f"space.activation must be one of {KNOWN_ACTIVATIONS}, got {config.activation!r}"
      )
    self.activation = str(config.activation)
    bits = config.weight_bits_choices
    self.bits_choices = None if bits is None else tuple(int(b) for b in bits)
    if self.bits_choices is not None and (
      not self.bits_choices or not set(self.bits_choices) <= set(KNOWN_WEIGHT_BITS)
    ):
      raise ValueError(
        f"space.weight_bits_choices must be None or values from "
        f"{KNOWN_WEIGHT_BITS}, got {bits}"
      )
    self.fields = ("op", "stride", "channels", "residual") + (
      ("bits",) if self.bits_choices else ()
    )
    h, w, _ = self.input_shape
    if not any(s == 1 or min(h, w) >= s for s in self.strides):
      raise ValueError(
        f"space.input_shape {self.input_shape} admits no layer with "
        f"strides {self.strides}"
      )

  # --- token layout -----------------------------------------------------------------

  @functools.cached_property
  def vocab_sizes(self) -> tuple[int, ...]:
    per_field = {
      "op": len(self.ops) + 1,
      "stride": len(self.strides) + 1,
      "channels": len(self.channels) + 1,
      "residual": 2,
      "bits": len(self.bits_choices or ()) + 1,
    }
    return tuple(per_field[f] for f in self.fields) * self.max_layers

  @property
  def fields_per_layer(self) -> int:
    return len(self.fields)

  def describe_position(self, position: int) -> str:
    layer, field = divmod(position, self.fields_per_layer)
    return f"layer {layer} {self.fields[field]}"

  def _layer_options(
    self, h: int, w: int, c: int, allow_end: bool
  ) -> list[tuple[tuple[int, ...], tuple[int, int, int] | None]]:
    return _layer_options(self, h, w, c, allow_end)

  def _layer_tuple(self, layer: Layer) -> tuple[int, ...]:
    t = [
      self.ops.index(layer.op) + 1,
      self.strides.index(layer.stride) + 1,
      self.channels.index(layer.channels) + 1 if layer.kind in WEIGHTED_KINDS else 0,
      int(layer.residual),
    ]
    if self.bits_choices:
      t.append(
        self.bits_choices.index(layer.weight_bits) + 1
        if layer.kind in WEIGHTED_KINDS
        else 0
      )
    return tuple(t)

  def _state_after(self, prefix: Sequence[int]) -> tuple[int, int, int, bool]:
    """(h, w, c, ended) at the start of the layer holding position ``len(prefix)``."""
    h, w, c = self.input_shape
    f = self.fields_per_layer
    for start in range(0, len(prefix) - len(prefix) % f, f):
      t = prefix[start : start + f]
      if t[0] == 0:
        return h, w, c, True
      stride = self.strides[t[1] - 1]
      h, w = -(-h // stride), -(-w // stride)
      if t[2]:
        c = self.channels[t[2] - 1]
    return h, w, c, False

  def valid_mask(self, prefix: Sequence[int]) -> np.ndarray:
    p = len(prefix)
    if p >= self.num_positions:
      raise IndexError(f"prefix of length {p} is already complete")
    f = self.fields_per_layer
    layer_index, field = divmod(p, f)
    mask = np.zeros(self.vocab_sizes[p], dtype=bool)
    h, w, c, ended = self._state_after(prefix)
    if ended:
      mask[0] = True
      return mask
    partial = tuple(int(t) for t in prefix[p - field : p])
    for choice, _ in self._layer_options(h, w, c, layer_index >= self.min_layers):
      if choice[:field] == partial:
        mask[choice[field]] = True
    return mask

  # --- architectures ------------------------------------------------------------------

  def _build(self, tokens: tuple[int, ...]) -> MacroArchitecture:
    f = self.fields_per_layer
    layers = []
    for start in range(0, self.num_positions, f):
      t = tokens[start : start + f]
      if t[0] == 0:
        break
      op = self.ops[t[0] - 1]
      kind = KNOWN_OPS[op][0]
      stride = self.strides[t[1] - 1]
      prev_c = layers[-1].channels if layers else self.input_shape[2]
      channels = self.channels[t[2] - 1] if kind in WEIGHTED_KINDS else prev_c
      bits = None
      if self.bits_choices and kind in WEIGHTED_KINDS:
        bits = self.bits_choices[t[4] - 1]
      layers.append(Layer(op, stride, channels, bool(t[3]), bits))
    return MacroArchitecture(
      tuple(layers), self.input_shape, self.num_classes, self.activation
    )

  def decode_layer(
    self, layer_tokens: Sequence[int], input_shape: tuple[int, int, int]
  ) -> MacroArchitecture:
    """A one-layer architecture of ``layer_tokens`` on input ``input_shape``."""
    t = tuple(int(v) for v in layer_tokens)
    arch = self._build(t + (0,) * (self.num_positions - len(t)))
    layer = arch.layers[0]
    if layer.kind not in WEIGHTED_KINDS:
      layer = dataclasses.replace(layer, channels=input_shape[2])
    return MacroArchitecture(
      (layer,), tuple(input_shape), self.num_classes, self.activation
    )

  def encode(self, arch: MacroArchitecture) -> np.ndarray:
    if (
      arch.input_shape != self.input_shape
      or arch.num_classes != self.num_classes
      or arch.activation != self.activation
    ):
      raise InvalidArchitectureError(
        f"architecture is for input {arch.input_shape}, {arch.num_classes} classes, "
        f"{arch.activation}; this space has {self.input_shape}, {self.num_classes}, "
        f"{self.activation}"
      )
    tokens: list[int] = []
    try:
      for layer in arch.layers:
        tokens.extend(self._layer_tuple(layer))
    except ValueError as e:  # a choice missing from the configured lists
      raise InvalidArchitectureError(
        f"architecture uses a choice outside the space: {e}"
      ) from e
    if len(arch.layers) > self.max_layers:
      raise InvalidArchitectureError(
        f"architecture has {len(arch.layers)} layers; space.max_layers is "
        f"{self.max_layers}"
      )
    tokens.extend([0] * (self.num_positions - len(tokens)))
    out = np.asarray(self.check_tokens(tokens), dtype=np.int32)
    if self._build(tuple(out.tolist())) != arch:  # e.g. pooling with wrong channels
      raise InvalidArchitectureError(f"architecture is not canonical: {arch.to_string()}")
    return out

  def parse(self, text: str) -> MacroArchitecture:
    """Parses ``to_string`` form, e.g. ``"conv3:s1:c32 maxpool:s2 dwsep5:s1:c32:res"``."""
    layers = []
    prev_c = self.input_shape[2]
    for item in text.split():
      parts = item.split(":")
      op = parts[0]
      if op not in self.ops:
        raise InvalidArchitectureError(
          f"unknown layer op {op!r} in {item!r}; accepted values: {list(self.ops)}"
        )
      stride, channels, residual, bits = 1, None, False, None
      for part in parts[1:]:
        if m := re.fullmatch(r"s(\d+)", part):
          stride = int(m.group(1))
        elif m := re.fullmatch(r"c(\d+)", part):
          channels = int(m.group(1))
        elif m := re.fullmatch(r"w(\d+)", part):
          bits = int(m.group(1))
        elif part == "res":
          residual = True
        else:
          raise InvalidArchitectureError(
            f"cannot parse {part!r} in layer {item!r}: expected sN (stride), cN "
            f"(channels), wN (weight bits) or res"
          )
      if KNOWN_OPS[op][0] in WEIGHTED_KINDS:
        if channels is None:
          raise InvalidArchitectureError(
            f"layer {item!r} needs channels (cN), one of {list(self.channels)}"
          )
        if (bits is None) != (self.bits_choices is None):
          raise InvalidArchitectureError(
            f"layer {item!r}: weight bits (wN) are required in a mixed-precision space "
            f"and only there; space.weight_bits_choices is {self.bits_choices}"
          )
      else:
        channels = prev_c
      layers.append(Layer(op, stride, channels, residual, bits))
      prev_c = channels
    if not layers:
      raise InvalidArchitectureError("empty architecture string")
    arch = MacroArchitecture(
      tuple(layers), self.input_shape, self.num_classes, self.activation
    )
    self.encode(arch)  # validates against the space, with a precise message
    return arch

  # --- exact uniform sampling ---------------------------------------------------------

  @functools.cached_property
  def automaton(self) -> BlockAutomaton:
    """The validity rules as an automaton over layers (one block per layer)."""
    f = self.fields_per_layer

    def options_fn(block, key):
      if key is None:  # the network has ended: padding only
        return [((0,) * f, None)]
      return self._layer_options(*key, block >= self.min_layers)

    return build_automaton(f, self.max_layers, self.input_shape, options_fn)

  def sample_tokens(
    self,
    rng: np.random.Generator,
    n: int,
    distribution: str = "uniform",
    return_path: bool = False,
  ):
    """``n`` canonical token vectors (int32 [n, P]), vectorized.

    Args:
      rng: the random generator.
      n: how many.
      distribution: ``"uniform"`` over all valid architectures (as ``sample``; almost
        all are ``max_layers`` deep), or ``"depth_uniform"``: the depth uniform over
        ``[min_layers, max_layers]``, then uniform among architectures of that depth.
      return_path: also return the automaton path (states [n, B], options [n, B]).
    """
    a = self.automaton
    if distribution == "uniform":
      return a.sample_weighted(rng, n, a.option_weights, return_path)
    if distribution != "depth_uniform":
      raise ValueError(
        f"distribution must be one of ['uniform', 'depth_uniform'], got {distribution!r}"
      )
    depths = rng.integers(self.min_layers, self.max_layers + 1, size=n)
    out = np.zeros((n, self.num_positions), dtype=np.int32)
    states = np.zeros((n, a.num_blocks), dtype=np.int32)
    choices = np.zeros((n, a.num_blocks), dtype=np.int32)
    for d in np.unique(depths):
      rows = np.flatnonzero(depths == d)
      counts = self._depth_counts(int(d))
      out[rows], states[rows], choices[rows] = a.sample_weighted(
        rng,
        len(rows),
        lambda s, b, c=counts, d=int(d): self._depth_values(s, b, c, d),
        return_path=True,
      )
    return (out, states, choices) if return_path else out

  def _depth_counts(self, depth: int) -> np.ndarray:
    """Per state: the number of completions of depth exactly ``depth`` (cached)."""
    cache = self.__dict__.setdefault("_depth_counts_cache", {})
    if depth not in cache:
      cache[depth] = self._compute_depth_counts(depth)
    return cache[depth]

  def _compute_depth_counts(self, depth: int) -> np.ndarray:
    a = self.automaton
    counts = np.zeros(a.num_states)
    for b in range(self.max_layers - 1, -1, -1):
      states = np.flatnonzero(a.state_block == b)
      counts[states] = self._depth_values(states, b, counts, depth).sum(axis=1)
    return counts

  def _depth_values(
    self, s: np.ndarray, block: int, counts: np.ndarray, depth: int
  ) -> np.ndarray:
    """[len(s), O]: completions of depth ``depth`` through each option of states s."""
    a = self.automaton
    opts = a.options[s]
    valid = a.option_valid[s]
    ended = ((opts[..., 0] == 0) & valid).sum(axis=1) == valid.sum(axis=1)  # padding only
    is_end = opts[..., 0] == 0
    if block == self.max_layers - 1:
      cont = np.full(is_end.shape, float(depth == self.max_layers))
    else:
      cont = counts[a.next_state[s]]
    v = np.where(is_end, float(block == depth), cont)
    v = np.where(ended[:, None], float(block > depth), v)
    return np.where(valid, v, 0.0)

  def count(self) -> int:
    """Number of distinct valid architectures in the space (exact)."""
    h, w, c = self.input_shape
    return _completions(self, 0, h, w, c)

  def sample(self, rng: np.random.Generator) -> MacroArchitecture:
    """Draws uniformly from all valid architectures of the space.

    Exact: each layer choice is drawn with probability proportional to the number of
    valid completions it leaves (dynamic programming over (layer, resolution, channels)).
    Note that uniform over architectures favours deep networks, because there are many
    more of them.
    """
    h, w, c = self.input_shape
    tokens: list[int] = []
    for i in range(self.max_layers):
      options = self._layer_options(h, w, c, i >= self.min_layers)
      weights = np.array(
        [
          1.0 if nxt is None else float(_completions(self, i + 1, *nxt))
          for _, nxt in options
        ]
      )
      choice, nxt = options[rng.choice(len(options), p=weights / weights.sum())]
      tokens.extend(choice)
      if nxt is None:
        break
      h, w, c = nxt
    tokens.extend([0] * (self.num_positions - len(tokens)))
    return self._build(tuple(tokens))


@functools.cache
def _layer_options(space: MacroSpace, h: int, w: int, c: int, allow_end: bool):
  """All valid complete token tuples for one layer at input (h, w, c).

  Returns (tuple, next_state) pairs; next_state is None for the end token.
  """
  f = space.fields_per_layer
  options: list[tuple[tuple[int, ...], tuple[int, int, int] | None]] = []
  if allow_end:
    options.append(((0,) * f, None))
  for oi, op in enumerate(space.ops, start=1):
    kind = KNOWN_OPS[op][0]
    for si, s in enumerate(space.strides, start=1):
      if min(h, w) < s:
        continue
      nh, nw = -(-h // s), -(-w // s)
      if kind not in WEIGHTED_KINDS:
        options.append(
          ((oi, si, 0, 0) + ((0,) if space.bits_choices else ()), (nh, nw, c))
        )
        continue
      for ci, ch in enumerate(space.channels, start=1):
        residuals = (0, 1) if (space.residual and s == 1 and ch == c) else (0,)
        bits = range(1, len(space.bits_choices) + 1) if space.bits_choices else (None,)
        for r in residuals:
          for b in bits:
            t = (oi, si, ci, r) + (() if b is None else (b,))
            options.append((t, (nh, nw, ch)))
  return options


@functools.cache
def _completions(space: MacroSpace, i: int, h: int, w: int, c: int) -> int:
  """Number of valid ways to fill layers i..max_layers-1 from input (h, w, c)."""
  if i == space.max_layers:
    return 1
  return sum(
    1 if nxt is None else _completions(space, i + 1, *nxt)
    for _, nxt in _layer_options(space, h, w, c, i >= space.min_layers)
  )


def reference_architecture(name: str) -> MacroArchitecture:
  """A named reference network (``REFERENCE_NETWORKS``)."""
  if name not in REFERENCE_NETWORKS:
    raise ValueError(
      f"unknown reference network {name!r}; accepted values: {sorted(REFERENCE_NETWORKS)}"
    )
  input_shape, num_classes, text = REFERENCE_NETWORKS[name]
  return space_for_string(text, input_shape, num_classes).parse(text)


def space_for_string(
  text: str, input_shape: tuple[int, int, int], num_classes: int, activation: str = "relu"
) -> MacroSpace:
  """The smallest macro space (every op, the string's channels) holding ``text``."""
  bits = sorted({int(b) for b in re.findall(r":w(\d+)", text)})
  config = MacroSpaceConfig(
    input_shape=tuple(input_shape),
    num_classes=num_classes,
    activation=activation,
    ops=tuple(KNOWN_OPS),
    min_layers=1,
    max_layers=max(1, len(text.split())),
    channels=tuple(sorted({int(c) for c in re.findall(r":c(\d+)", text)} or {8})),
    weight_bits_choices=tuple(bits) if bits else None,
  )
  return MacroSpace(config)
