"""The architectures the Fashion-MNIST benchmarks measure (fidelity.py, candidate_speed.py)."""

from __future__ import annotations

import numpy as np

from nasq import costs
from nasq.spaces import macro

HAND_WRITTEN = (
  "conv3:s1:c16 maxpool:s2 conv3:s1:c32 maxpool:s2 conv3:s1:c64",
  "conv3:s2:c32 dwsep3:s1:c32:res dwsep3:s2:c64 dwsep3:s1:c64:res",
  "conv5:s1:c24 maxpool:s2 dwsep3:s1:c48 maxpool:s2 dwsep3:s1:c64 conv1:s1:c48",
)


def architectures(space, budget, weight_bits, n, seed, hand_written=True):
  """The reference network, ``n`` distinct feasible architectures, depth uniform, then
  the hand-written ones; those over the budget are left out."""
  rng = np.random.default_rng(seed)
  found: list[tuple[str, object]] = []
  seen: set[str] = set()
  while len(found) < n:
    tokens = space.sample_tokens(rng, 64, distribution="depth_uniform")
    for arch in space.decode_many(tokens):
      text = arch.to_string()
      c = costs.compute_costs(arch, weight_bits).summary()
      if text not in seen and budget.fits(c) and len(found) < n:
        seen.add(text)
        found.append(("random", arch))
  shape, classes = space.input_shape, space.num_classes
  hand = [("reference", macro.reference_architecture("fmnist_ref"))]
  for text in HAND_WRITTEN if hand_written else ():
    hand.append(("hand", macro.space_for_string(text, shape, classes).parse(text)))
  for origin, arch in hand:
    if budget.fits(costs.compute_costs(arch, weight_bits).summary()):
      found.insert(0 if origin == "reference" else len(found), (origin, arch))
    else:
      print(f"skipped (over the budget): {arch.to_string()}")
  return found
