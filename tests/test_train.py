import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasq import checkpoints, data, models, train
from nasq.quant import QuantConfig
from nasq.spaces import macro


def synthetic_dataset(n=1024, seed=0):
  """A learnable 10-class problem: the class sets the images' brightness."""
  rng = np.random.default_rng(seed)

  def make(n):
    labels = rng.integers(0, 10, n).astype(np.int32)
    noise = rng.integers(0, 20, (n, 28, 28, 1))
    images = (labels[:, None, None, None] * 24 + noise).astype(np.uint8)
    return data.Split(images, labels)

  return data.make_dataset(
    "fashion_mnist", make(n + 128), make(128), val_size=128, seed=seed
  )


ARCH = macro.space_for_string("conv3:s2:c8 conv3:s2:c16", (28, 28, 1), 10).parse(
  "conv3:s2:c8 conv3:s2:c16"
)


def small_config(**overrides):
  return train.TrainConfig(
    **{"epochs": 6, "batch_size": 64, "eval_batch_size": 100, "progress": False}
    | overrides
  )


def test_qat_training_learns_and_is_deterministic():
  ds = synthetic_dataset()
  r1 = train.train_and_evaluate(ARCH, QuantConfig(4), ds, small_config())
  assert r1.status == "ok" and r1.epochs_completed == 6
  losses = [m["train_loss"] for m in r1.epoch_metrics]
  assert losses[-1] < losses[0]
  assert r1.val_accuracy > 0.25  # chance is 0.1
  assert r1.test_accuracy is None  # the search never touches the test split
  r2 = train.train_and_evaluate(ARCH, QuantConfig(4), ds, small_config())
  assert r2.epoch_metrics == r1.epoch_metrics
  assert (
    r1.costs["model_size_bits"]
    < train.train_and_evaluate(ARCH, QuantConfig(32), ds, small_config(epochs=1)).costs[
      "model_size_bits"
    ]
  )


def test_final_training_reports_test_accuracy():
  ds = synthetic_dataset()
  r = train.train_and_evaluate(ARCH, QuantConfig(8), ds, small_config(final=True))
  assert r.status == "ok" and r.test_accuracy is not None and r.val_accuracy is None


def test_crop_flip_augmentation_keeps_shapes_and_content():
  images = jnp.arange(2 * 6 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 6, 1)
  out = train.augment_crop_flip(images, jax.random.key(0), padding=0)
  for i in range(2):  # with no padding, only a flip can happen
    assert np.array_equal(out[i], images[i]) or np.array_equal(out[i], images[i, :, ::-1])
  out = train.augment_crop_flip(images, jax.random.key(1), padding=2)
  assert out.shape == images.shape


def test_diverging_run_is_recorded_as_failed():
  ds = synthetic_dataset()
  r = train.train_and_evaluate(
    ARCH,
    QuantConfig(4),
    ds,
    small_config(optimizer="sgd", learning_rate=1e30, warmup_epochs=0.0),
  )
  assert r.status == "failed"
  assert "non-finite" in r.failure_reason
  assert r.variables is None


def test_bad_optimizer_is_named():
  with pytest.raises(ValueError, match="train.optimizer must be one of"):
    small_config(optimizer="lbfgs")


def test_checkpoint_round_trip_restores_the_same_function(tmp_path):
  model = models.build_model(ARCH, 4)
  v = models.init_variables(model, ARCH.input_shape, jax.random.key(0))
  checkpoints.save_checkpoint(str(tmp_path / "ckpt"), v)
  template = models.init_variables(model, ARCH.input_shape, jax.random.key(1))
  restored = checkpoints.load_checkpoint(str(tmp_path / "ckpt"), template)
  chex.assert_trees_all_close(restored, v, rtol=0, atol=0)
  x = jax.random.normal(jax.random.key(2), (4, *ARCH.input_shape))
  np.testing.assert_array_equal(model.apply(restored, x), model.apply(v, x))


DATA_PARALLEL_SCRIPT = """
import json, jax, numpy as np
from nasq import train
from nasq.quant import QuantConfig
from tests.test_train import ARCH, small_config, synthetic_dataset
assert jax.local_device_count() == 2, jax.devices()
ds = synthetic_dataset(n=512)
out = {}
for n in (1, 2):
  r = train.train_and_evaluate(
    ARCH, QuantConfig(4), ds, small_config(epochs=3, num_devices=n)
  )
  leaf = jax.tree.leaves(r.variables["params"])[0]
  out[n] = {
    "status": r.status,
    "epochs": r.epoch_metrics,
    "devices": len(leaf.sharding.device_set),
    "params": [np.asarray(x).tolist() for x in jax.tree.leaves(r.variables["params"])],
  }
try:
  train.train_and_evaluate(ARCH, QuantConfig(4), ds, small_config(batch_size=63, num_devices=2))
except ValueError as e:
  out["error"] = str(e)
print("RESULT" + json.dumps(out))
"""


def test_data_parallel_training_on_two_devices_matches_one_device():
  """Two simulated CPU devices (a fresh process: the device count is fixed at start)."""
  import json
  import os
  import subprocess
  import sys

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(
    [sys.executable, "-c", DATA_PARALLEL_SCRIPT],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split("RESULT", 1)[1])
  one, two = out["1"], out["2"]
  assert one["status"] == two["status"] == "ok"
  assert (one["devices"], two["devices"]) == (1, 2)  # parameters replicated on both
  for a, b in zip(one["epochs"], two["epochs"], strict=True):
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(a["val_loss"], b["val_loss"], rtol=1e-4)
  for a, b in zip(one["params"], two["params"], strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
  assert "train.batch_size 63 must be divisible by the 2 devices" in out["error"]


def test_num_devices_errors_are_named():
  ds = synthetic_dataset(n=256)
  with pytest.raises(ValueError, match="train.num_devices must be 0"):
    train.train_and_evaluate(ARCH, QuantConfig(4), ds, small_config(num_devices=64))


def test_a_network_without_batchnorm_trains():
  """Only pooling before the classifier: no BatchNorm, so no ``batch_stats`` at all (a
  search may propose such a network; it must train, not crash the search)."""
  spec = "maxpool:s2 avgpool:s2"
  arch = macro.space_for_string(spec, (28, 28, 1), 10).parse(spec)
  r = train.train_and_evaluate(
    arch, QuantConfig(4), synthetic_dataset(256), small_config(epochs=1)
  )
  assert r.status == "ok" and r.val_accuracy is not None


def test_a_float_warm_start_trains_unquantized_then_quantized():
  ds = synthetic_dataset(n=512)
  config = small_config(epochs=2)
  warm = train.train_and_evaluate(
    ARCH, QuantConfig(4), ds, dataclasses.replace(config, float_epochs=1)
  )
  floating = train.train_and_evaluate(ARCH, QuantConfig(32), ds, config)
  qat = train.train_and_evaluate(ARCH, QuantConfig(4), ds, config)
  # Epoch 1 is the float run's to the bit (same variables, schedule and batches);
  # epoch 2 trains with 4-bit kernels, so it leaves the float run.
  first = [r.epoch_metrics[0]["train_loss"] for r in (warm, floating, qat)]
  assert first[0] == first[1] != first[2]
  assert warm.epoch_metrics[1]["train_loss"] != floating.epoch_metrics[1]["train_loss"]


def test_float_weights_override_a_mixed_precision_network():
  text = "conv3:s2:c8:w2 conv3:s2:c16:w8"
  arch = macro.space_for_string(text, (28, 28, 1), 10).parse(text)
  x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
  variables = models.init_variables(
    models.build_model(arch, 4), (28, 28, 1), jax.random.key(0)
  )
  plain = macro.space_for_string("conv3:s2:c8 conv3:s2:c16", (28, 28, 1), 10).parse(
    "conv3:s2:c8 conv3:s2:c16"
  )
  as_float = models.build_model(arch, 4, float_weights=True).apply(variables, x)
  reference = models.build_model(plain, 32).apply(variables, x)
  quantized = models.build_model(arch, 4).apply(variables, x)
  np.testing.assert_array_equal(as_float, reference)
  assert not np.allclose(as_float, quantized)


def test_augmentation_choice_and_its_errors():
  ds = synthetic_dataset(n=256)
  assert train.TrainConfig().augmentation(ds) == ("none", 2)  # Fashion-MNIST's own
  assert train.TrainConfig(augment="crop_flip").augmentation(ds) == ("crop_flip", 2)
  padded = train.TrainConfig(augment="crop_flip", crop_padding=3)
  assert padded.augmentation(ds) == ("crop_flip", 3)
  config = small_config(epochs=1)
  plain = train.train_and_evaluate(ARCH, QuantConfig(4), ds, config)
  augmented = train.train_and_evaluate(
    ARCH, QuantConfig(4), ds, dataclasses.replace(config, augment="crop_flip")
  )
  assert plain.train_loss != augmented.train_loss  # the augmentation reached the step
  with pytest.raises(ValueError, match="train.augment must be one of"):
    train.TrainConfig(augment="flip")
  with pytest.raises(
    ValueError, match=r"train.float_epochs must be in \[0, train.epochs\)"
  ):
    train.TrainConfig(epochs=3, float_epochs=3)
  with pytest.raises(ValueError, match="train.crop_padding must be >= 0"):
    train.TrainConfig(crop_padding=-1)
