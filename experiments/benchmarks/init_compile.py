r"""What it costs to create a candidate's initial training state (parameters, batch
statistics, optimizer state) before its first step, by random-number generator.

  python experiments/benchmarks/init_compile.py          # --archs=3 --seed=0

For ``--archs`` random networks of the default search space (configs/default.py),
each in a fresh process pinned to one core (so no compiled program is shared), it
times ``train.create_state`` (``models.init_variables`` compiled with JAX's sequential
threefry, what training uses) against the same with JAX's default partitionable
threefry, and the compilation of the network's training step for scale. Prints a
table with the median seconds and the ratio; one process per (network, generator).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys

from absl import app, flags

_ARCHS = flags.DEFINE_integer("archs", 3, "Random networks of the default space.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the networks drawn.")

_CHILD = r"""
import contextlib, functools, json, sys, time
import jax, jax.numpy as jnp, numpy as np, optax
from configs import default
from nasq import models, train
from nasq.runs.config import space_from_config
from nasq.spaces import make_space

index, seed, generator = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
space = make_space(space_from_config(default.get_config().space))
rng = np.random.default_rng(seed)
for _ in range(index + 1):
  arch = space.sample(rng)
model = models.build_model(arch, 4)
tx = optax.adamw(1e-3)
if generator == "partitionable":
  # init_variables as it was before: JAX's default generator (partitionable) inside.
  assert jax.config.jax_threefry_partitionable
  jax.threefry_partitionable = lambda flag: contextlib.nullcontext()
start = time.perf_counter()
state = train.create_state(model, tx, arch.input_shape, jax.random.key(0))
jax.block_until_ready(state.params)
create = time.perf_counter() - start
step = jax.jit(functools.partial(
  train.train_step, model=model, mean=jnp.float32(0), std=jnp.float32(1),
  augment="none", crop_padding=0, label_smoothing=0.0))
batch = {"image": jnp.zeros((128, *arch.input_shape), jnp.uint8),
         "label": jnp.zeros((128,), jnp.int32)}
start = time.perf_counter()
step.lower(state, batch, jax.random.key(1)).compile()
print(json.dumps({"arch": arch.to_string(), "create_state": create,
                  "step_compile": time.perf_counter() - start}))
"""


def _measure(index: int, generator: str) -> dict:
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["JAX_PLATFORMS"] = "cpu"
  cores = sorted(os.sched_getaffinity(0))
  cmd = ["taskset", "-c", str(cores[0]), sys.executable, "-c", _CHILD]
  cmd += [str(index), str(_SEED.value), generator]
  proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(proc.stderr[-3000:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  rows = {"sequential": [], "partitionable": []}
  for index in range(_ARCHS.value):
    for generator in rows:  # interleaved, so a slow moment hits both
      rows[generator].append(_measure(index, generator))
      r = rows[generator][-1]
      print(
        f"{generator:13s} {r['create_state']:6.1f} s create_state, "
        f"{r['step_compile']:6.1f} s train-step compile  {r['arch']}",
        flush=True,
      )
  med = {g: statistics.median(r["create_state"] for r in v) for g, v in rows.items()}
  step = statistics.median(r["step_compile"] for v in rows.values() for r in v)
  print(f"\n{_ARCHS.value} networks of the default space, 1 core, {platform.machine()}")
  print("| generator | create_state (median) | partitionable / this |")
  print("|---|---|---|")
  for g in rows:
    print(f"| {g} | {med[g]:.1f} s | {med['partitionable'] / med[g]:.2f}x |")
  print(f"\nTraining-step compilation (median, for scale): {step:.1f} s")


if __name__ == "__main__":
  app.run(main)
