import dataclasses
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds

from nasq import data


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reader_and_fashion_mnist_loader(tmp_path, fake_fashion_mnist, compress):
  arrays = fake_fashion_mnist(tmp_path, compress=compress)
  train, test = data.load_fashion_mnist_idx(str(tmp_path))
  np.testing.assert_array_equal(train.images[..., 0], arrays["train"][0])
  np.testing.assert_array_equal(test.labels, arrays["t10k"][1])
  assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
  assert train.images.shape == (60, 28, 28, 1)


def test_idx_reader_rejects_bad_files(tmp_path):
  bad = tmp_path / "bad"
  bad.write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x05abc")
  with pytest.raises(ValueError, match="not an IDX file"):
    data.read_idx(str(bad))
  short = tmp_path / "short"
  short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"abc")
  with pytest.raises(ValueError, match="header says"):
    data.read_idx(str(short))


def test_missing_files_tell_how_to_get_them(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion"):
    data.load_fashion_mnist_idx(str(tmp_path))


def test_load_dataset_splits_and_statistics(tmp_path, fake_fashion_mnist):
  fake_fashion_mnist(tmp_path)
  c = data.DataConfig(data_dir=str(tmp_path), val_size=10)
  ds = data.load_dataset(c)
  assert (len(ds.train), len(ds.val), len(ds.test)) == (50, 10, 20)
  # Train and validation partition the official training set.
  both = np.concatenate([ds.train.images, ds.val.images]).reshape(60, -1)
  assert len({row.tobytes() for row in both}) == 60
  np.testing.assert_allclose(ds.mean[0], ds.train.images.mean() / 255, rtol=1e-6)
  again = data.load_dataset(c)
  np.testing.assert_array_equal(again.val.images, ds.val.images)
  c = dataclasses.replace(c, seed=1)
  assert not np.array_equal(data.load_dataset(c).val.images, ds.val.images)
  assert len(ds.train_and_val()) == 60


def _class_ordered(n_per_class: int, classes: int = 10, shape=(4, 4, 1)) -> data.Split:
  """Examples sorted by class, as a folder of class subfolders is read; each image
  holds its own index, so a subset can be traced back."""
  n = n_per_class * classes
  labels = np.repeat(np.arange(classes), n_per_class).astype(np.int32)
  images = np.zeros((n, int(np.prod(shape))), np.uint8)
  images[:, 0], images[:, 1] = np.arange(n) % 256, np.arange(n) // 256
  return data.Split(images.reshape(n, *shape), labels)


def _ids(split: data.Split) -> set[int]:
  flat = split.images.reshape(len(split), -1).astype(int)
  return set((flat[:, 0] + 256 * flat[:, 1]).tolist())


def test_subsets_of_class_ordered_data_keep_every_class_in_proportion():
  """6,000 class-ordered images of 10 classes, 1,200 kept for training and 300 for
  testing: every class is in both subsets with its share (to within one example), the
  draw is seeded, and the subsets are drawn at random, not the first examples."""
  train, test = _class_ordered(600), _class_ordered(100)
  ds = data.make_dataset(
    "ordered", train, test, val_size=1000, seed=0, train_size=1200, test_size=300
  )
  # Validation is a random draw, so the 5,000 left for training are near-balanced.
  left = np.bincount(train.labels[sorted(set(range(6000)) - _ids(ds.val))], minlength=10)
  for split, size, shares in ((ds.train, 1200, left / 5000), (ds.test, 300, 0.1)):
    counts = np.bincount(split.labels, minlength=10)
    assert len(split) == size and np.abs(counts - size * shares).max() <= 1, counts
  again = data.make_dataset(
    "ordered", train, test, val_size=1000, seed=0, train_size=1200, test_size=300
  )
  np.testing.assert_array_equal(again.train.images, ds.train.images)
  other = data.make_dataset(
    "ordered", train, test, val_size=1000, seed=1, train_size=1200, test_size=300
  )
  assert not np.array_equal(other.train.images, ds.train.images)


@pytest.mark.parametrize("seed", range(5))
def test_sample_indices_is_a_stratified_sample_without_repeats(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 7, size=int(rng.integers(50, 400)))
  size = int(rng.integers(1, len(labels) + 1))
  idx = data.sample_indices(labels, size, seed)
  assert len(idx) == size == len(set(idx.tolist())) and np.all(np.diff(idx) > 0)
  counts, totals = np.bincount(labels[idx], minlength=7), np.bincount(labels, minlength=7)
  # Each class's share of the sample is its share of the data, to within one example.
  assert np.all(np.abs(counts - size * totals / len(labels)) <= 1 + 1e-9)
  # Larger samples of one seed contain the smaller ones (a rung's images are nested).
  bigger = data.sample_indices(labels, min(size + 10, len(labels)), seed)
  assert set(idx.tolist()) <= set(bigger.tolist())


def test_a_carved_test_split_does_not_depend_on_the_sections_seed():
  """Data without a test split: the search (seed 0) and the retraining (seed 1) hold out
  the same test examples, so neither trains on the other's test images."""
  train = _class_ordered(50)
  a = data.make_dataset("ordered", train, None, val_size=50, seed=0, test_fraction=0.2)
  b = data.make_dataset("ordered", train, None, val_size=50, seed=1, test_fraction=0.2)
  assert a.test_carved and b.test_carved
  np.testing.assert_array_equal(a.test.images, b.test.images)
  for ds in (a, b):
    assert not _ids(a.test) & (_ids(ds.train) | _ids(ds.val))


@pytest.mark.parametrize(
  "field, value, match",
  [
    ("name", "imagenet", "data.name 'imagenet' is not one of"),
    ("source", "http", "data.source must be one of"),
    ("source", "npz", "data.source for fashion_mnist must be one of"),
    ("val_size", 0, "data.val_size must be >= 1"),
    ("val_size", 60, r"data.val_size must be in \(0, 60\)"),
    ("train_size", -1, "data.train_size must be >= 0"),
    ("test_size", -3, "data.test_size must be >= 0"),
    ("train_size", 41, "data.train_size=41 exceeds the 40 training examples"),
    ("test_size", 21, "data.test_size=21 exceeds the 20 test examples"),
  ],
)
def test_bad_config(tmp_path, fake_fashion_mnist, field, value, match):
  fake_fashion_mnist(tmp_path)
  with pytest.raises(ValueError, match=match):
    data.load_dataset(
      data.DataConfig(**{"data_dir": str(tmp_path), "val_size": 20, field: value})
    )


def test_batching_is_deterministic_and_complete():
  split = data.Split(
    np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1), np.arange(10, dtype=np.int32)
  )
  a = [b["label"] for b in data.train_batches(split, 3, seed=0, epoch=0)]
  b = [b["label"] for b in data.train_batches(split, 3, seed=0, epoch=0)]
  c = [b["label"] for b in data.train_batches(split, 3, seed=0, epoch=1)]
  assert len(a) == 3 and all(len(x) == 3 for x in a)
  assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
  assert len(set(np.concatenate(a).tolist())) == 9
  evals = list(data.eval_batches(split, 4))
  assert [int(e["mask"].sum()) for e in evals] == [4, 4, 2]
  assert all(len(e["label"]) == 4 for e in evals)
  np.testing.assert_array_equal(
    np.concatenate([e["label"][e["mask"]] for e in evals]), split.labels
  )


@pytest.mark.parametrize(
  "name, shape, classes", [("cifar100", (32, 32, 3), 100), ("stl10", (96, 96, 3), 10)]
)
def test_tfds_datasets_through_mock_data(name, shape, classes):
  c = data.DataConfig(name=name, source="tfds", val_size=8)
  with tfds.testing.mock_data(num_examples=24):
    ds = data.load_dataset(c)
  assert ds.input_shape == shape and ds.num_classes == classes
  assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 8, 24)
  assert ds.augment == "crop_flip"
  assert ds.train.labels.min() >= 0 and ds.train.labels.max() < classes


def test_tfds_without_data_fails_clearly(tmp_path):
  c = data.DataConfig(name="cifar10", source="tfds", data_dir=str(tmp_path))
  with pytest.raises(data.DatasetNotFoundError, match="data.download=True"):
    data.load_dataset(c)
