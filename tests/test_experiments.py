"""The entry points, run as a user runs them, on shrunken configs."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from nasq import models, run
from tests.test_data import fake_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_entry_point(tmp_path):
  fake_fashion_mnist(tmp_path, n_train=300, n_test=50)
  workdir = tmp_path / "work"
  cmd = [
    sys.executable,
    "experiments/train.py",
    "--config=configs/train.py",
    f"--workdir={workdir}",
    f"--config.data.data_dir={tmp_path}",
    "--config.data.val_size=100",
    "--config.train.epochs=2",
    "--config.train.batch_size=50",
    "--config.train.progress=False",
    "--config.arch=conv3:s2:c8:w8 maxpool:s2 dwsep3:s1:c16:w4",
    "--config.space.weight_bits_choices=(2, 4, 8)",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((workdir / "result.json").read_text())
  assert result["status"] == "ok" and result["epochs_completed"] == 2
  assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 2
  assert "| layer2 | dwsep3 |" in (workdir / "costs.md").read_text()
  # The checkpoint restores to the trained variables' structure.
  config = json.loads((workdir / "config.json").read_text())
  assert config["arch"].startswith("conv3")


def test_checkpoint_round_trip(tmp_path):
  from nasq.spaces import macro

  arch = macro.reference_architecture("fmnist_ref")
  model = models.build_model(arch, 4)
  v = models.init_variables(model, arch.input_shape, jax.random.key(0))
  run.save_checkpoint(str(tmp_path / "ckpt"), v)
  restored = run.load_checkpoint(str(tmp_path / "ckpt"), v)
  jax.tree.map(np.testing.assert_array_equal, restored, v)


def test_resolve_architecture_errors():
  from configs.train import get_config

  c = get_config()
  c.arch = "conv3:s1:c12"
  with pytest.raises(ValueError, match="outside the space"):
    run.resolve_architecture(c)
  c.arch = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"
  arch = run.resolve_architecture(c)
  assert arch.input_shape == (28, 28, 1)
  c.data.name = "svhn"
  with pytest.raises(ValueError, match="data.name must be one of"):
    run.resolve_architecture(c)


def test_train_autoencoder_entry_point_and_cache(tmp_path):
  workdir, cache = tmp_path / "work", tmp_path / "cache"
  cmd = [
    sys.executable,
    "experiments/train_autoencoder.py",
    "--config=configs/autoencoder_nb201.py",
    f"--workdir={workdir}",
    f"--config.cache_dir={cache}",
    "--config.autoencoder.steps=300",
    "--config.autoencoder.hidden=64",
    "--config.num_prior=500",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "exact reconstruction, holdout (15625 architectures)" in proc.stdout
  assert "500 decoded, 100.00% valid" in proc.stdout
  report = json.loads((workdir / "autoencoder_report.json").read_text())
  assert (workdir / "latent.png").stat().st_size > 10_000
  (entry,) = list(cache.iterdir())
  assert entry.name.startswith("nb201-") and (entry / "meta.json").exists()
  # A second run loads the cached autoencoder: the same model, no training.
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  again = json.loads((workdir / "autoencoder_report.json").read_text())
  assert again["holdout"] == report["holdout"]
  assert again["train_seconds"] == report["train_seconds"]
  assert "autoencoder:" not in proc.stderr  # no training progress bar
