r"""The cost model's peak activation memory against LiteRT Micro's measured arena.

  pip install -e .[export]       # tensorflow-cpu, ai-edge-litert, tflite-micro
  python experiments/benchmarks/peak_memory.py            # about 3 minutes, 2 cores

Architectures: ``--num_random`` drawn uniformly from the default search's space
(configs/default.py) that fit its budgets, plus the reference network and hand-written
ones with residual and depthwise-separable layers. Each is exported to a full-integer
int8 ``.tflite`` (random weights, random calibration images: the arena does not depend
on their values) and run once by the ``tflite-micro`` interpreter, whose recording
allocator reports the arena: ``head`` (activation buffers, as its memory planner lays
them out), ``tail`` (persistent runtime data: tensor structs, op data, quantization
parameters) and ``total``. The cost model's ``peak_activation_bytes`` (8-bit
activations; the exported graph's buffers laid out as LiteRT Micro's greedy planner
does) is compared with ``head``; an under-estimate of the whole arena beyond the
runtime's fixed overhead (``tail``) would be a cost model error. The largest live set
(the most bytes alive at once, what an optimal planner needs) is printed beside it.
"""

from __future__ import annotations

import multiprocessing
import platform
import statistics

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from nasq import costs, export, models
from nasq.arena import macro_live_peak_elements
from nasq.runs.config import from_config, space_from_config
from nasq.spaces import macro, make_space

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/default.py", "The search whose space and budgets are sampled."
)
_NUM_RANDOM = flags.DEFINE_integer("num_random", 20, "Random feasible architectures.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")

HAND_WRITTEN = (
  "conv3:s1:c32 conv3:s1:c32 maxpool:s2 conv3:s1:c64 conv3:s1:c64 maxpool:s2 conv3:s1:c48",
  "conv3:s2:c16 dwsep3:s1:c16:res dwsep3:s1:c16:res conv3:s2:c32 dwsep5:s1:c32:res",
  "conv3:s1:c8 dwsep3:s1:c8:res avgpool:s2 dwsep3:s1:c16 maxpool:s2 conv1:s1:c16:res",
)


def architectures(space, budget, n, seed):
  rng = np.random.default_rng(seed)
  found, seen = [], set()
  while len(found) < n:
    arch = space.sample(rng)
    c = costs.compute_costs(arch, 4).summary()
    if arch.to_string() in seen or not budget.fits(c):
      continue
    seen.add(arch.to_string())
    found.append(arch)
  return found


def measure(arch):
  variables = models.init_variables(
    models.build_model(arch, 4), tuple(arch.input_shape), jax.random.key(0)
  )
  net = export.fold(arch, variables, 4, 0.3, 0.3)
  images = np.random.default_rng(0).integers(0, 256, (8, *arch.input_shape))
  model = export.to_tflite(net, images.astype(np.float32))
  return export.micro_arena(model)


def main(argv):
  del argv
  config = _CONFIG.value
  space = make_space(space_from_config(config.space))
  budget = from_config(costs.Budget, config.budget, "budget")
  archs = architectures(space, budget, _NUM_RANDOM.value, _SEED.value)
  for text in HAND_WRITTEN:
    archs.append(macro.space_for_string(text, (28, 28, 1), 10).parse(text))
  print(f"machine: {platform.machine()}, {multiprocessing.cpu_count()} CPUs")
  rows = []
  for arch in archs:
    predicted = costs.compute_costs(arch, 4, 8).peak_activation_bytes
    live = macro_live_peak_elements(arch)  # 8-bit: one byte an element
    arena = measure(arch)
    rows.append((arch.to_string(), predicted, live, arena))
    print(
      f"{predicted:7d} predicted ({live:7d} live), arena head {arena['head']:7d} "
      f"tail {arena['tail']:5d}: {arch.to_string()}",
      flush=True,
    )
  print(
    "\n| architecture | cost model (B) | largest live set (B) | arena head (B) | "
    "tail (B) | error vs head |"
  )
  print("|---|---|---|---|---|---|")
  errors = []
  for text, predicted, live, arena in rows:
    err = (predicted - arena["head"]) / arena["head"]
    errors.append(err)
    print(
      f"| `{text}` | {predicted} | {live} | {arena['head']} | {arena['tail']} | "
      f"{100 * err:+.1f}% |"
    )
  exact = sum(p == a["head"] for _, p, _, a in rows)
  under = [
    (t, p, a) for t, p, _, a in rows if a["total"] - p > a["tail"]
  ]  # beyond the fixed overhead
  print(
    f"\n{len(rows)} architectures, {exact} to the byte; relative error of the cost model against the "
    f"arena's activation part: median {100 * statistics.median(errors):+.1f}%, "
    f"max |error| {100 * max(abs(e) for e in errors):.1f}%; under-estimates of the "
    f"whole arena beyond its persistent part: {len(under)}"
  )


if __name__ == "__main__":
  app.run(main)
