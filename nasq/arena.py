"""Peak activation memory of a macro network on a microcontroller runtime.

The exported graph (``nasq/export.py``) runs layer by layer; each activation tensor is
alive from the operator that writes it to the last one that reads it. LiteRT Micro lays
the tensors out in one arena with a greedy planner; ``macro_arena_bytes`` repeats that
layout from the architecture alone and equals the runtime's measured arena
(experiments/benchmarks/peak_memory.py). ``macro_live_peak_elements``, the most
elements alive at once, is the lower bound an optimal planner would reach; the
feasibility check uses it because it decomposes layer by layer.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence

from nasq.spaces.macro import Layer, MacroArchitecture

Shape = tuple[int, int, int]
ARENA_ALIGNMENT = 16  # bytes; LiteRT Micro aligns every arena buffer to 16 bytes


def numel(shape: Shape) -> int:
  return shape[0] * shape[1] * shape[2]


def downsample(shape: Shape, stride: int, channels: int) -> Shape:
  """The shape after a SAME-padded stride-``stride`` operator with ``channels``."""
  return (-(-shape[0] // stride), -(-shape[1] // stride), channels)


def layer_live_elements(layer: Layer, inp: Shape, out: Shape) -> int:
  """Activation elements alive while ``layer`` runs: its input and output (and the
  depthwise intermediate of a depthwise-separable layer). With a residual, the input
  stays alive across input -> intermediate -> output, and the addition writes a third
  buffer while both its operands are alive, as a layer-by-layer runtime (LiteRT Micro's
  ADD) does."""
  live = numel(inp) + numel(out)
  if layer.kind == "dwsep":  # input -> depthwise intermediate -> output
    mid = numel(downsample(inp, layer.stride, inp[2]))
    held = numel(inp) if layer.residual else 0
    live = max(numel(inp) + mid, held + mid + numel(out))
  if layer.residual:
    live = max(live, numel(inp) + 2 * numel(out))
  return live


def head_live_elements(last: Shape, num_classes: int) -> int:
  """Global pooling (features and pooled vector), then the classifier."""
  return max(numel(last) + last[2], last[2] + num_classes)


def macro_live_peak_elements(arch: MacroArchitecture) -> int:
  """The most activation elements alive at once (a lower bound of the arena)."""
  shapes = arch.shapes()
  peak = max(
    (
      layer_live_elements(layer, shapes[i], shapes[i + 1])
      for i, layer in enumerate(arch.layers)
    ),
    default=0,
  )
  return max(peak, head_live_elements(shapes[-1], arch.num_classes))


@dataclasses.dataclass(frozen=True)
class Buffer:
  """One activation tensor: its size and the operators (by index) that write it
  (``first``; 0 for the graph input) and read it last (``last``)."""

  elements: int
  first: int
  last: int


def macro_buffers(arch: MacroArchitecture) -> list[Buffer]:
  """Every activation tensor of the exported graph, in the order it is created: the raw
  image, its normalization (a multiply, then an add), per layer its depthwise
  intermediate (dwsep), its output and its residual sum, then the pooled features and
  the logits. A residual layer's input is read by the addition, so it lives until then."""
  shapes = arch.shapes()
  live: list[list[int]] = [[numel(shapes[0]), 0, 0]]  # elements, first, last

  def write(elements: int, *reads: int) -> int:
    op = len(live) - 1  # one new tensor per operator
    for r in reads:
      live[r][2] = op
    live.append([elements, op, op])
    return len(live) - 1

  x = write(numel(shapes[0]), 0)  # MUL
  x = write(numel(shapes[0]), x)  # ADD: the normalized image
  for i, layer in enumerate(arch.layers):
    inputs = x
    if layer.kind == "dwsep":
      x = write(numel(downsample(shapes[i], layer.stride, shapes[i][2])), x)
    x = write(numel(shapes[i + 1]), x)
    if layer.residual:
      x = write(numel(shapes[i + 1]), x, inputs)
  x = write(shapes[-1][2], x)  # MEAN
  write(arch.num_classes, x)  # FULLY_CONNECTED: the graph output
  return [Buffer(*b) for b in live]


def greedy_arena_bytes(sizes: Sequence[int], buffers: Sequence[Buffer]) -> int:
  """Bytes of the arena LiteRT Micro's greedy memory planner lays ``buffers`` out in,
  ``sizes[i]`` bytes each (aligned up to ``ARENA_ALIGNMENT``): largest first (equal
  sizes latest created first, as its stable sort of the reversed list leaves them),
  each at the lowest offset where it overlaps no placed buffer alive at the same time."""
  aligned = [-(-n // ARENA_ALIGNMENT) * ARENA_ALIGNMENT for n in sizes]
  order = sorted(range(len(buffers)), key=lambda i: (-aligned[i], -i))
  offsets: list[int] = []  # placed buffers' offsets, ascending
  placed: list[int] = []  # their indices, in the same order
  end = 0
  for i in order:
    b, offset = buffers[i], 0
    for at, j in zip(offsets, placed, strict=True):
      other = buffers[j]
      if other.first > b.last or b.first > other.last:
        continue  # never alive together
      if at - offset >= aligned[i]:
        break  # the gap before ``j`` holds it
      offset = max(offset, at + aligned[j])
    k = bisect.bisect_right(offsets, offset)  # after those at the same offset
    offsets.insert(k, offset)
    placed.insert(k, i)
    end = max(end, offset + aligned[i])
  return end


def int4_scratch_buffers(arch: MacroArchitecture, weight_bits: int) -> list[Buffer]:
  """The int8 scratch buffers LiteRT Micro's reference kernels take in the arena to
  unpack each INT4 filter while its operator runs: one per convolution stored packed
  (``nasq.export_int4``: layers of at most 4 bits), the filter's element count, alive
  at that operator alone (numbered as in ``macro_buffers``)."""
  shapes = arch.shapes()
  out, op = [], 2  # operators 0 and 1 normalize the image
  for i, layer in enumerate(arch.layers):
    bits = layer.weight_bits if layer.weight_bits is not None else weight_bits
    packed = bits <= 4
    cin = shapes[i][2]
    if layer.kind == "dwsep":
      if packed:
        out.append(Buffer(layer.kernel_size**2 * cin, op, op))
        out.append(Buffer(cin * layer.channels, op + 1, op + 1))
      op += 2
    elif layer.kind == "conv":
      if packed:
        out.append(Buffer(layer.kernel_size**2 * cin * layer.channels, op, op))
      op += 1
    else:
      op += 1
    op += 1 if layer.residual else 0
  return out


def macro_arena_bytes(
  arch: MacroArchitecture, activation_bits: int, int4_weight_bits: int | None = None
) -> int:
  """The activation arena of the int8 export; with ``int4_weight_bits`` (the model's
  weight bits), of the int4 export, whose packed filters are unpacked in the arena."""
  buffers = macro_buffers(arch)
  sizes = [math.ceil(b.elements * activation_bits / 8) for b in buffers]
  if int4_weight_bits is not None:
    scratch = int4_scratch_buffers(arch, int4_weight_bits)
    buffers, sizes = buffers + scratch, sizes + [b.elements for b in scratch]
  return greedy_arena_bytes(sizes, buffers)
