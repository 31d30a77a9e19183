"""A user's own images: a ``.npz`` file or a folder with one subfolder per class.

Both become uint8 NHWC splits for ``nasq.data``; everything that can be wrong with them
(a missing file, arrays of the wrong shape or type, labels out of range, a single
class, images of different sizes) is a ``UserDataError`` naming the file and what is
wrong, raised when the data is read, before any training.

* ``.npz``: arrays ``x_train`` (uint8, [N, H, W] or [N, H, W, C] with C = 1 or 3) and
  ``y_train`` (integers 0..K-1, [N]); optionally ``x_test`` and ``y_test`` alike.
* A folder: ``<folder>/<class>/<image>`` (the classes are the subfolders' names, in
  sorted order), or ``<folder>/train/<class>/...`` with ``<folder>/test/<class>/...``
  beside it. Images (PNG, JPEG, BMP, GIF, WebP, read by Pillow) are converted to
  grayscale or RGB (``channels``; 0: RGB unless every image is grayscale) and resized
  to ``image_size`` x ``image_size`` (0: all must have one size).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class UserDataError(ValueError):
  """The user's data cannot be used; the message names the file and the problem."""


def _images(x: np.ndarray, what: str) -> np.ndarray:
  if x.dtype != np.uint8:
    raise UserDataError(f"{what} must be uint8 images (0..255), got dtype {x.dtype}")
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise UserDataError(
      f"{what} must be [N, H, W] (grayscale) or [N, H, W, C] with C = 1 or 3, got "
      f"shape {x.shape}"
    )
  if min(x.shape[1:3]) < 1 or len(x) < 1:
    raise UserDataError(f"{what} holds no image (shape {x.shape})")
  return x


def _labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
  if y.ndim != 1 or len(y) != n:
    raise UserDataError(f"{what} must be one label per image, [{n}], got shape {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise UserDataError(f"{what} must be integers 0..K-1, got dtype {y.dtype}")
  if len(y) and y.min() < 0:
    raise UserDataError(f"{what} must be >= 0, got {int(y.min())}")
  return y.astype(np.int32)


def check_classes(
  train_labels: np.ndarray, test_labels: np.ndarray | None, where: str
) -> int:
  """The class count (largest training label + 1); at least two classes, and test
  labels within them."""
  num_classes = int(train_labels.max()) + 1
  if len(np.unique(train_labels)) < 2:
    raise UserDataError(f"{where}: the training labels hold one class only; need >= 2")
  if test_labels is not None and len(test_labels) and test_labels.max() >= num_classes:
    raise UserDataError(
      f"{where}: test label {int(test_labels.max())} is out of range: the training "
      f"labels define classes 0..{num_classes - 1}"
    )
  return num_classes


def load_npz(path: str) -> tuple[tuple, tuple | None]:
  """((x_train, y_train), (x_test, y_test) or None) of a ``.npz`` file, checked."""
  if not os.path.isfile(path):
    raise UserDataError(f"data.name: no .npz file at {path}")
  try:
    arrays = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise UserDataError(f"{path} is not a readable .npz file: {e}") from None
  with arrays:
    keys = set(arrays.files)
    missing = {"x_train", "y_train"} - keys
    if missing:
      raise UserDataError(
        f"{path} has no {sorted(missing)}: a dataset .npz holds x_train and y_train, "
        f"and optionally x_test and y_test (it holds {sorted(keys)})"
      )
    if ("x_test" in keys) != ("y_test" in keys):
      raise UserDataError(f"{path}: x_test and y_test come together (one is missing)")
    x = _images(arrays["x_train"], f"{path}: x_train")
    train = (x, _labels(arrays["y_train"], len(x), f"{path}: y_train"))
    test = None
    if "x_test" in keys:
      xt = _images(arrays["x_test"], f"{path}: x_test")
      if xt.shape[1:] != x.shape[1:]:
        raise UserDataError(
          f"{path}: x_test images are {xt.shape[1:]}, x_train's {x.shape[1:]}"
        )
      test = (xt, _labels(arrays["y_test"], len(xt), f"{path}: y_test"))
  check_classes(train[1], None if test is None else test[1], path)
  return train, test


def _class_folders(folder: Path) -> list[Path]:
  return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_folder(
  folder: Path, classes: list[str], image_size: int, channels: int
) -> tuple[list[np.ndarray], list[int], list[Path]]:
  images, labels, files = [], [], []
  for label, name in enumerate(classes):
    sub = folder / name
    if not sub.is_dir():
      raise UserDataError(
        f"{folder} has no class folder {name!r} (the classes: {classes})"
      )
    for path in sorted(sub.iterdir()):
      if path.suffix.lower() not in IMAGE_SUFFIXES:
        continue
      try:
        with Image.open(path) as img:
          mode = {1: "L", 3: "RGB"}.get(channels) or (
            "L" if img.mode in ("L", "1", "I;16") else "RGB"
          )
          img = img.convert(mode)
          if image_size:
            img = img.resize((image_size, image_size), Image.BILINEAR)
          images.append(np.asarray(img, np.uint8))
      except (UnidentifiedImageError, OSError) as e:
        raise UserDataError(f"{path} is not a readable image: {e}") from None
      labels.append(label)
      files.append(path)
  return images, labels, files


def _stack(images: list[np.ndarray], files: list[Path], where: Path) -> np.ndarray:
  if not images:
    raise UserDataError(f"{where} holds no image ({', '.join(IMAGE_SUFFIXES)})")
  gray = all(a.ndim == 2 for a in images)
  if not gray:  # some RGB: make the grayscale ones RGB too
    images = [np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a for a in images]
  shape = images[0].shape
  for a, f in zip(images, files, strict=True):
    if a.shape != shape:
      raise UserDataError(
        f"{f} is {a.shape[1]}x{a.shape[0]} pixels, {files[0]} is {shape[1]}x{shape[0]}: "
        f"set data.image_size to resize every image to one size"
      )
  x = np.stack(images)
  return x[..., None] if gray else x


def load_folder(
  path: str, image_size: int = 0, channels: int = 0
) -> tuple[tuple, tuple | None]:
  """((x_train, y_train), (x_test, y_test) or None) of an image folder (module
  docstring), checked; ``channels`` 0 keeps grayscale only if every image is."""
  root = Path(path)
  if not root.is_dir():
    raise UserDataError(f"data.name: no folder at {path}")
  split_dirs = {p.name for p in _class_folders(root)}
  if "train" in split_dirs and _class_folders(root / "train"):
    train_dir, test_dir = (
      root / "train",
      (root / "test" if "test" in split_dirs else None),
    )
  else:
    train_dir, test_dir = root, None
  classes = [p.name for p in _class_folders(train_dir)]
  if len(classes) < 2:
    raise UserDataError(
      f"{train_dir} must hold one subfolder per class, at least two; found {classes}"
    )
  images, labels, files = _read_folder(train_dir, classes, image_size, channels)
  x = _stack(images, files, train_dir)
  train = (x, np.asarray(labels, np.int32))
  test = None
  if test_dir is not None:
    extra = sorted({p.name for p in _class_folders(test_dir)} - set(classes))
    if extra:
      raise UserDataError(f"{test_dir} has classes the training folder lacks: {extra}")
    present = [c for c in classes if (test_dir / c).is_dir()]
    t_images, t_labels, t_files = _read_folder(test_dir, present, image_size, channels)
    t_labels = [classes.index(present[i]) for i in t_labels]
    xt = _stack(t_images, t_files, test_dir)
    if xt.shape[1:] != x.shape[1:]:
      raise UserDataError(
        f"{test_dir} images are {xt.shape[1:]}, {train_dir}'s {x.shape[1:]}"
      )
    test = (xt, np.asarray(t_labels, np.int32))
  check_classes(train[1], None if test is None else test[1], path)
  return train, test
