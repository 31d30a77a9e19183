r"""The export gap on a folder of images, and whether the calibration draw explains it.

Writes 1,500 RGB 40x40 PNGs in 10 class folders (150 a class, a seeded draw from the
offline Fashion-MNIST training images, upscaled), runs the README's small folder search
on them (resized to 32, 5 epochs per candidate, 20 for the retrained one, export on),
then exports the delivered checkpoint twice: calibrated on the first 500 training
images (what the export did before 2026-12-08: on class-ordered data, the first classes
only) and on the seeded class-stratified draw it uses now. Prints the JAX, int8
.tflite, ONNX and LiteRT Micro int8 test accuracies of both.

  python experiments/benchmarks/folder_export.py --workdir=/tmp/folder_export

About 6 minutes on 2 cores (the 32x32x3 space's autoencoder: 4 of them, once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from absl import app, flags
from PIL import Image

from nasq import data as data_lib
from nasq.runs import export as export_run

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/folder_export", "Where it all goes.")
REPO = Path(__file__).resolve().parents[2]


def write_folder(out: Path, per_class: int = 150) -> None:
  train, _ = data_lib.load_fashion_mnist_idx()
  rng = np.random.default_rng(0)
  for c in range(10):
    (out / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in rng.choice(np.flatnonzero(train.labels == c), per_class, replace=False):
      image = Image.fromarray(train.images[i, ..., 0]).resize((40, 40), Image.BILINEAR)
      image.convert("RGB").save(out / f"class{c}" / f"{i}.png")


def main(argv):
  del argv
  root = Path(_WORKDIR.value)
  folder, search = root / "photos", root / "search"
  if not folder.exists():
    write_folder(folder)
  cmd = [
    sys.executable,
    str(REPO / "experiments" / "search.py"),
    "--config=" + str(REPO / "configs" / "default.py"),
    f"--workdir={search}",
    f"--config.data.name={folder}",
    "--config.data.image_size=32",
    "--config.data.val_size=500",
    "--config.data.train_size=0",
    "--config.num_initial=2",
    "--config.num_evaluations=4",
    "--config.num_final=1",
    "--config.export=True",
    "--config.train.epochs=5",
    "--config.final_train.epochs=20",
    "--config.progress=False",
  ]
  subprocess.run(cmd, check=True)
  rows = {}
  sample = data_lib.sample
  for name in ("first 500", "stratified draw"):
    if name == "first 500":  # the export's calibration before the fix
      data_lib.sample = lambda split, n, seed: data_lib.Split(
        split.images[:n], split.labels[:n]
      )
    try:
      r = export_run.export_workdir(
        search, root / f"export_{name.split()[0]}", reuse=False, num_micro_test=0
      )
    finally:
      data_lib.sample = sample
    rows[name] = {
      "jax": r["jax_accuracy"],
      "tflite_int8": r["tflite_accuracy"],
      "onnx": r["onnx_accuracy"],
      "micro_int8": r.get("int4", {}).get("micro_accuracy_int8"),
      "num_test": r["num_test"],
    }
  print("| calibration | JAX | int8 .tflite | ONNX | LiteRT Micro int8 | test images |")
  print("|---|---|---|---|---|---|")
  for name, r in rows.items():
    micro = "n/a" if r["micro_int8"] is None else f"{r['micro_int8']:.4f}"
    print(
      f"| {name} | {r['jax']:.4f} | {r['tflite_int8']:.4f} | {r['onnx']:.4f} | "
      f"{micro} | {r['num_test']} |"
    )
  (root / "folder_export.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  app.run(main)
