r"""Quantization-aware training of one fixed reference CNN on full Fashion-MNIST.

Trains ``fmnist_ref`` (93K parameters, see nasq.spaces.macro.REFERENCE_NETWORKS) on the
full 60,000-image training set at 32, 8 and 4-bit weights with the same schedule, and
reports test accuracy, model size and wall time for each width.

  python experiments/benchmarks/qat_reference.py                  # about 35 min, 2 cores
  python experiments/benchmarks/qat_reference.py --epochs=2       # a quick look

Training recipes (issue: the final recipe) are compared with --recipes, each
"AUGMENT:FLOAT_EPOCHS" (augmentation dataset/none/crop_flip; the first FLOAT_EPOCHS of the
schedule train float weights, the rest quantization-aware):

  python experiments/benchmarks/qat_reference.py --bits=4 --epochs=10 \
      --recipes=dataset:0,crop_flip:0,dataset:3,crop_flip:3 --out=/tmp/recipes.json

With --out, rows already in that file are kept and not trained again, so an interrupted
run continues.

Target: >= 92.5% test accuracy at 32 bits, 4 bits within 0.5 points of it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform

from absl import app, flags

from nasq import data, train
from nasq.quant import QuantConfig
from nasq.spaces.macro import reference_architecture

_EPOCHS = flags.DEFINE_integer("epochs", 15, "Training epochs per bit width.")
_BITS = flags.DEFINE_list("bits", ["32", "8", "4"], "Weight bit widths.")
_NETWORK = flags.DEFINE_string("network", "fmnist_ref", "Reference network.")
_RECIPES = flags.DEFINE_list(
  "recipes",
  ["dataset:0"],
  "Training recipes, each AUGMENT:FLOAT_EPOCHS (augment one of train.AUGMENTS).",
)
_OUT = flags.DEFINE_string("out", "", "Optional JSON file for the results (resumed).")


def parse_recipe(text: str) -> tuple[str, int]:
  """'crop_flip:3' -> ('crop_flip', 3), with a clear error naming the flag."""
  augment, _, float_epochs = text.partition(":")
  if augment not in train.AUGMENTS or not float_epochs.isdigit():
    raise ValueError(
      f"--recipes entries must be AUGMENT:FLOAT_EPOCHS with AUGMENT one of "
      f"{train.AUGMENTS} and FLOAT_EPOCHS an integer, got {text!r}"
    )
  return augment, int(float_epochs)


def main(argv):
  del argv
  dataset = data.load_dataset(data.DataConfig())
  arch = reference_architecture(_NETWORK.value)
  recipes = [parse_recipe(r) for r in _RECIPES.value]
  # All 60,000 training images; report test accuracy.
  base = train.TrainConfig(epochs=_EPOCHS.value, final=True)
  rows = []
  if _OUT.value and os.path.exists(_OUT.value):
    with open(_OUT.value) as f:
      rows = json.load(f)
  for bits in [int(b) for b in _BITS.value]:
    for augment, float_epochs in recipes:
      config = dataclasses.replace(base, augment=augment, float_epochs=float_epochs)
      key = {
        "network": _NETWORK.value,
        "weight_bits": bits,
        "epochs": _EPOCHS.value,
        "augment": augment,
        "float_epochs": float_epochs,
      }
      if any(all(r.get(k) == v for k, v in key.items()) for r in rows):
        continue
      result = train.train_and_evaluate(arch, QuantConfig(bits), dataset, config)
      row = {
        **key,
        "status": result.status,
        "test_accuracy": result.test_accuracy,
        "params": result.costs["params"],
        "model_size_kB": result.costs["model_size_bits"] / 8 / 1000,
        "macs": result.costs["macs"],
        "wall_time_s": round(result.wall_time_s, 1),
      }
      rows.append(row)
      print(json.dumps(row), flush=True)
      if _OUT.value:
        tmp = _OUT.value + ".tmp"
        with open(tmp, "w") as f:
          json.dump(rows, f, indent=1)
        os.replace(tmp, _OUT.value)
  print(
    f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} "
    f"CPU cores; {arch.to_string()}; {_EPOCHS.value} epochs, batch "
    f"{base.batch_size}, {base.optimizer} lr {base.learning_rate}"
  )
  print(
    "| weight bits | epochs | augment | float epochs | test accuracy | model size (kB) "
    "| params | MACs | wall time (s) |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(
      f"| {r['weight_bits']} | {r.get('epochs', '')} | {r.get('augment', 'dataset')} | "
      f"{r.get('float_epochs', 0)} | {100 * (r['test_accuracy'] or 0):.2f}% | "
      f"{r['model_size_kB']:.1f} | {r['params']} | {r['macs']} | "
      f"{r['wall_time_s']} |"
    )
  by_bits = {
    r["weight_bits"]: r["test_accuracy"]
    for r in rows
    if (r.get("augment", "dataset"), r.get("float_epochs", 0)) == recipes[0]
  }
  if 32 in by_bits and 4 in by_bits and None not in by_bits.values():
    print(f"4-bit minus 32-bit: {100 * (by_bits[4] - by_bits[32]):+.2f} points")


if __name__ == "__main__":
  app.run(main)
