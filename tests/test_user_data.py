"""A user's own data: .npz files, image folders, any TFDS dataset, and their errors."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from nasq import data
from nasq.user_data import UserDataError


def write_npz(path, n=60, shape=(10, 12), classes=3, test=True, **overrides):
  rng = np.random.default_rng(0)
  arrays = {
    "x_train": rng.integers(0, 256, (n, *shape), dtype=np.uint8),
    "y_train": np.arange(n) % classes,
  }
  if test:
    arrays["x_test"] = rng.integers(0, 256, (20, *shape), dtype=np.uint8)
    arrays["y_test"] = np.arange(20) % classes
  arrays.update(overrides)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  np.savez(path, **arrays)
  return arrays


def write_folder(
  root, classes=("cat", "dog", "owl"), per_class=8, size=(9, 7), mode="RGB"
):
  rng = np.random.default_rng(0)
  for c in classes:
    (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
      shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
      pixels = rng.integers(0, 256, shape, dtype=np.uint8)
      Image.fromarray(pixels, mode).save(root / c / f"{i}.png")


def test_an_npz_with_a_test_split_becomes_a_dataset(tmp_path):
  arrays = write_npz(tmp_path / "d.npz")
  ds = data.load_dataset(data.DataConfig(name=str(tmp_path / "d.npz"), val_size=12))
  assert ds.input_shape == (10, 12, 1) and ds.num_classes == 3  # HW images: grayscale
  assert (len(ds.train), len(ds.val), len(ds.test)) == (48, 12, 20)
  np.testing.assert_array_equal(ds.test.images[..., 0], arrays["x_test"])
  assert ds.augment == "none" and ds.crop_padding == 1
  pixels = ds.train.images.astype(np.float64) / 255
  assert ds.mean[0] == pytest.approx(pixels.mean()) and ds.std[0] == pytest.approx(
    pixels.std()
  )
  # Every training image is one of the file's, none of them twice, none in validation.
  rows = {x.tobytes() for x in arrays["x_train"]}
  seen = [x[..., 0].tobytes() for x in np.concatenate([ds.train.images, ds.val.images])]
  assert set(seen) == rows and len(seen) == len(rows)


def test_an_npz_without_a_test_split_has_one_carved(tmp_path):
  write_npz(tmp_path / "d.npz", n=100, shape=(8, 8, 3), test=False)
  config = data.DataConfig(name=str(tmp_path / "d.npz"), val_size=10, test_fraction=0.25)
  ds = data.load_dataset(config)
  assert ds.input_shape == (8, 8, 3)
  assert (len(ds.train), len(ds.val), len(ds.test)) == (65, 10, 25)
  train_rows = {x.tobytes() for x in ds.train.images}
  assert not train_rows & {x.tobytes() for x in ds.test.images}  # held out
  again = data.load_dataset(config)  # seeded: the same carving every time
  np.testing.assert_array_equal(again.test.images, ds.test.images)


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"x_train": None}, "has no \\['x_train'\\]"),
    ({"y_test": None}, "x_test and y_test come together"),
    ({"x_train": np.zeros((60, 10, 12), np.float32)}, "x_train must be uint8"),
    ({"x_train": np.zeros((60, 10, 12, 2), np.uint8)}, "C = 1 or 3, got shape"),
    ({"y_train": np.zeros(59, np.int64)}, "y_train must be one label per image"),
    ({"y_train": np.full(60, -1)}, "y_train must be >= 0"),
    ({"y_train": np.full(60, 2.0)}, "y_train must be integers"),
    ({"y_train": np.zeros(60, np.int64)}, "one class only"),
    ({"y_test": np.full(20, 7)}, "test label 7 is out of range"),
    ({"x_test": np.zeros((20, 11, 12), np.uint8)}, "x_test images are"),
  ],
)
def test_a_bad_npz_is_an_error_naming_the_file_and_the_problem(
  tmp_path, overrides, message
):
  path = tmp_path / "bad.npz"
  write_npz(path, **overrides)
  with pytest.raises(UserDataError, match=message) as info:
    data.load_dataset(data.DataConfig(name=str(path), val_size=5))
  assert str(path) in str(info.value)


def test_a_missing_npz_is_named(tmp_path):
  with pytest.raises(UserDataError, match="no .npz file at"):
    data.load_dataset(data.DataConfig(name=str(tmp_path / "none.npz")))


def test_an_image_folder_with_and_without_a_test_folder(tmp_path):
  write_folder(tmp_path / "flat")
  ds = data.load_dataset(data.DataConfig(name=str(tmp_path / "flat"), val_size=4))
  assert ds.input_shape == (7, 9, 3) and ds.num_classes == 3
  assert len(ds.train) + len(ds.val) + len(ds.test) == 24 and len(ds.test) == 5
  # train/ and test/ beside each other; grayscale images stay one channel.
  write_folder(tmp_path / "split" / "train", mode="L")
  write_folder(tmp_path / "split" / "test", classes=("dog", "owl"), per_class=2, mode="L")
  ds = data.load_dataset(data.DataConfig(name=str(tmp_path / "split"), val_size=4))
  assert ds.input_shape == (7, 9, 1) and len(ds.test) == 4
  assert sorted(ds.test.labels.tolist()) == [1, 1, 2, 2]  # dog and owl keep their ids
  # Converted and resized on request.
  config = data.DataConfig(
    name=str(tmp_path / "split"), val_size=4, image_size=5, channels=3
  )
  assert data.load_dataset(config).input_shape == (5, 5, 3)


def test_image_folder_errors_name_the_files(tmp_path):
  write_folder(tmp_path / "one", classes=("only",))
  with pytest.raises(UserDataError, match="one subfolder per class, at least two"):
    data.load_dataset(data.DataConfig(name=str(tmp_path / "one")))
  write_folder(tmp_path / "sizes")
  Image.new("RGB", (20, 20)).save(tmp_path / "sizes" / "dog" / "big.png")
  with pytest.raises(UserDataError, match="big.png is 20x20 pixels.*data.image_size"):
    data.load_dataset(data.DataConfig(name=str(tmp_path / "sizes")))
  write_folder(tmp_path / "broken")
  (tmp_path / "broken" / "owl" / "x.png").write_bytes(b"not a png")
  with pytest.raises(UserDataError, match="x.png is not a readable image"):
    data.load_dataset(data.DataConfig(name=str(tmp_path / "broken")))
  write_folder(tmp_path / "extra" / "train")
  write_folder(tmp_path / "extra" / "test", classes=("emu",))
  with pytest.raises(
    UserDataError, match="classes the training folder lacks: \\['emu'\\]"
  ):
    data.load_dataset(data.DataConfig(name=str(tmp_path / "extra")))


def test_any_tfds_image_dataset_reads_its_shape_and_classes_from_its_builder():
  with tfds.testing.mock_data(num_examples=40):
    ds = data.load_dataset(data.DataConfig(name="svhn_cropped", val_size=10))
  assert ds.input_shape == (32, 32, 3) and ds.num_classes == 10
  assert (len(ds.train), len(ds.val)) == (30, 10) and len(ds.test) == 40
  with pytest.raises(ValueError, match="data.name 'no_such_set' is not one of"):
    data.load_dataset(data.DataConfig(name="no_such_set"))
