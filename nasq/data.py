"""Datasets: the offline Fashion-MNIST IDX files, any TFDS dataset, and a user's own
images (a ``.npz`` file or a folder of class subfolders, ``nasq.user_data``), one
in-memory pipeline.

Every dataset becomes three uint8 NHWC splits held in host memory: ``train`` and ``val``
(carved from the training set by a seeded permutation; validation drives the search)
and ``test`` (the official test set, for final evaluation only; carved from the
training set too, ``data.test_fraction``, where the data has none). Normalization
statistics come from the ``train`` split. Augmentation (random crop + flip for CIFAR and
STL-10) runs inside the jitted training step (``nasq.train``), keyed by the step.

Batching is deterministic: the order of an epoch is a function of (seed, epoch) alone.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from nasq import idx, user_data

# "auto": idx for fashion_mnist, npz for a .npz path, folder for a directory, tfds else.
SOURCES = ("auto", "idx", "tfds", "npz", "folder")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What nasq knows about a dataset."""

  input_shape: tuple[int, int, int]
  num_classes: int
  augment: str  # "none" or "crop_flip"
  crop_padding: int  # zero padding before the random crop
  sources: tuple[str, ...]
  tfds_name: str
  tfds_test_split: str = "test"


DATASETS: dict[str, DatasetInfo] = {
  # Fashion-MNIST and MNIST train without augmentation by default; crop_padding is what
  # train.augment="crop_flip" pads them by.
  "fashion_mnist": DatasetInfo(
    (28, 28, 1), 10, "none", 2, ("idx", "tfds"), "fashion_mnist"
  ),
  "mnist": DatasetInfo((28, 28, 1), 10, "none", 2, ("tfds",), "mnist"),
  "cifar10": DatasetInfo((32, 32, 3), 10, "crop_flip", 4, ("tfds",), "cifar10"),
  "cifar100": DatasetInfo((32, 32, 3), 100, "crop_flip", 4, ("tfds",), "cifar100"),
  "stl10": DatasetInfo((96, 96, 3), 10, "crop_flip", 12, ("tfds",), "stl10"),
}


DatasetNotFoundError = idx.DatasetNotFoundError  # the dataset's files are not here
read_idx = idx.read_idx  # IDX files (MNIST, Fashion-MNIST)


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # uint8 [N, H, W, C]
  labels: np.ndarray  # int32 [N]

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train / validation / test splits and what the training step needs to know."""

  name: str
  train: Split
  val: Split
  test: Split
  num_classes: int
  mean: tuple[float, ...]  # per-channel, of images scaled to [0, 1]
  std: tuple[float, ...]
  augment: str
  crop_padding: int
  # Training examples left after carving validation, before train_size kept a subset.
  num_train_available: int = 0
  # Whether ``test`` was carved from the training examples (the data has no test split).
  test_carved: bool = False

  @property
  def input_shape(self) -> tuple[int, int, int]:
    return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

  def train_and_val(self) -> Split:
    """Training and validation together, for the final retraining of a model."""
    return Split(
      np.concatenate([self.train.images, self.val.images]),
      np.concatenate([self.train.labels, self.val.labels]),
    )


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """A dataset and its splits (the ``data`` and ``final_data`` sections)."""

  # A name of nasq.data.DATASETS, any TFDS dataset name, the path of a .npz file, or
  # the path of a folder of images with one subfolder per class (nasq.user_data).
  name: str = "fashion_mnist"
  # "auto" (from the name), "idx" (offline Fashion-MNIST files), "tfds", "npz", "folder".
  source: str = "auto"
  data_dir: str = ""  # IDX folder or TFDS data_dir; "" for the default location.
  download: bool = False  # Let TFDS download and prepare the dataset if missing.
  val_size: int = 10_000  # Validation examples carved from the training set.
  train_size: int = 0  # Keep only this many training examples (0: all); for quick runs.
  test_size: int = 0  # Keep only this many test examples (0: all); for quick runs.
  # Where the data has no test split (a .npz without x_test, a folder without test/,
  # a TFDS dataset without "test"): this fraction of the examples is carved as one.
  test_fraction: float = 0.2
  image_size: int = 0  # Folder images resized to this many pixels square (0: keep).
  channels: int = 0  # Folder images as 1 (grayscale) or 3 (RGB); 0: as they are.
  seed: int = 0  # Seed of the train/validation (and carved test) split.

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f"data.source must be one of {SOURCES}, got {self.source!r}")
    source = self.resolved_source
    if source == "idx" and self.name != "fashion_mnist":
      raise ValueError(
        f"data.source='idx' reads the offline Fashion-MNIST files only; data.name is "
        f"{self.name!r} (use 'tfds', or 'auto')"
      )
    if self.name in DATASETS and source not in DATASETS[self.name].sources:
      raise ValueError(
        f"data.source for {self.name} must be one of {DATASETS[self.name].sources} "
        f"(or 'auto'), got {self.source!r}"
      )
    if not 0 < self.test_fraction < 1:
      raise ValueError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")
    if self.image_size < 0:
      raise ValueError(f"data.image_size must be >= 0 (0: keep), got {self.image_size}")
    if self.channels not in (0, 1, 3):
      raise ValueError(f"data.channels must be 0, 1 or 3, got {self.channels}")
    if self.val_size < 1:
      raise ValueError(f"data.val_size must be >= 1, got {self.val_size}")
    for field in ("train_size", "test_size"):
      if getattr(self, field) < 0:
        raise ValueError(
          f"data.{field} must be >= 0 (0: all examples), got {getattr(self, field)}"
        )

  @property
  def resolved_source(self) -> str:
    """The source "auto" stands for (module constants), or the one set."""
    if self.source != "auto":
      return self.source
    if self.name == "fashion_mnist":
      return "idx"
    if self.name.endswith(".npz"):
      return "npz"
    if os.path.isdir(os.path.expanduser(self.name)):
      return "folder"
    return "tfds"


def load_fashion_mnist_idx(data_dir: str = "") -> tuple[Split, Split]:
  """The official (train, test) splits from the IDX files of Debian's package."""
  return tuple(
    Split(images, labels) for images, labels in idx.load_fashion_mnist(data_dir)
  )


# --- TFDS --------------------------------------------------------------------------------


def _tfds_split(name: str, split: str, data_dir: str, download: bool) -> Split:

  try:
    source = tfds.data_source(
      name, split=split, data_dir=data_dir or None, download=download
    )
  except Exception as e:  # tfds raises several types for a dataset that is not there
    if download:
      raise
    raise DatasetNotFoundError(
      f"TFDS dataset {name!r} (split {split!r}) is not prepared in "
      f"{data_dir or 'the default TFDS data_dir'}: set data.download=True on a machine "
      f"with a network, or data.data_dir to where it was prepared ({e})"
    ) from e
  examples = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(ex["image"], np.uint8) for ex in examples])
  labels = np.asarray([int(ex["label"]) for ex in examples], np.int32)
  return Split(images, labels)


def load_tfds(
  name: str, data_dir: str = "", download: bool = False
) -> tuple[Split, Split | None, int]:
  """(train, test, class count) of a TFDS dataset, through ``tfds.data_source``
  (ArrayRecord; no TensorFlow needed): test is None if the dataset has no test split.
  A name of ``DATASETS`` uses the table's TFDS name and test split; any other is read
  as a TFDS dataset, its class count and splits from its builder's info."""
  info = DATASETS.get(name)
  if info is not None:
    train = _tfds_split(info.tfds_name, "train", data_dir, download)
    return (
      train,
      _tfds_split(info.tfds_name, info.tfds_test_split, data_dir, download),
      info.num_classes,
    )
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception:  # tfds raises its own DatasetNotFoundError, listing thousands
    raise ValueError(
      f"data.name {name!r} is not one of {sorted(DATASETS)}, a TFDS dataset, a .npz "
      f"file (x_train, y_train[, x_test, y_test]) or a folder of class subfolders"
    ) from None
  features = builder.info.features
  if "image" not in features or "label" not in features:
    raise ValueError(
      f"data.name {name!r}: nasq classifies images; the TFDS dataset has no 'image' "
      f"and 'label' features (it has {sorted(features)})"
    )
  train = _tfds_split(name, "train", data_dir, download)
  has_test = "test" in builder.info.splits or not builder.info.splits
  test = _tfds_split(name, "test", data_dir, download) if has_test else None
  return train, test, int(features["label"].num_classes)


def _user_split(arrays: tuple | None) -> Split | None:
  return None if arrays is None else Split(arrays[0], arrays[1])


# --- assembling a Dataset ----------------------------------------------------------------


def sample_indices(labels: np.ndarray, size: int, seed) -> np.ndarray:
  """``size`` indices of ``labels``, a seeded random sample stratified by class: each
  class keeps its share (to within one example), whatever order the examples come in
  (a folder is read class by class). Sorted, so a subset keeps the data's order."""
  labels = np.asarray(labels)
  n = len(labels)
  if not 0 <= size <= n:
    raise ValueError(f"cannot sample {size} of {n} examples")
  perm = np.random.default_rng(seed).permutation(n)
  shuffled = labels[perm]
  # Each example's position among its class's (in the shuffled order), as a fraction
  # of that class's count: taking the smallest fractions first interleaves the classes
  # in proportion to their sizes.
  _, inverse, counts = np.unique(shuffled, return_inverse=True, return_counts=True)
  order = np.argsort(inverse, kind="stable")
  rank = np.empty(n, np.int64)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  rank[order] = np.arange(n) - np.repeat(starts, counts)
  fraction = (rank + 0.5) / counts[inverse]
  chosen = perm[np.argsort(fraction, kind="stable")[:size]]
  return np.sort(chosen)


def sample(split: Split, size: int, seed) -> Split:
  """A seeded, class-stratified random subset of ``split`` (``sample_indices``)."""
  chosen = sample_indices(split.labels, size, seed)
  return Split(split.images[chosen], split.labels[chosen])


def carve_validation(train: Split, val_size: int, seed: int) -> tuple[Split, Split]:
  """Splits ``train`` into (train, validation) by a seeded permutation."""
  if not 0 < val_size < len(train):
    raise ValueError(f"data.val_size must be in (0, {len(train)}), got {val_size}")
  perm = np.random.default_rng(seed).permutation(len(train))
  val_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
  return (
    Split(train.images[train_idx], train.labels[train_idx]),
    Split(train.images[val_idx], train.labels[val_idx]),
  )


# The carved test split is a function of the data and ``test_fraction`` alone, not of a
# section's ``seed``: the search, its promotions and the retraining hold out the same
# test examples, so none of them trains on another's test images.
TEST_CARVE_SEED = 0


def carve_test(train: Split, fraction: float) -> tuple[Split, Split]:
  """(train, test): ``fraction`` of ``train`` held out as a test split, for data
  without one (one fixed seed, ``TEST_CARVE_SEED``; independent of the validation
  carving)."""
  n = len(train)
  k = int(round(fraction * n))
  if not 0 < k < n:
    raise ValueError(
      f"data.test_fraction={fraction} of {n} examples leaves no test or no training "
      f"example: give the data a test split or more examples"
    )
  perm = np.random.default_rng([TEST_CARVE_SEED, 1]).permutation(n)
  test_idx, train_idx = np.sort(perm[:k]), np.sort(perm[k:])
  return (
    Split(train.images[train_idx], train.labels[train_idx]),
    Split(train.images[test_idx], train.labels[test_idx]),
  )


def make_dataset(
  name: str,
  train: Split,
  test: Split | None,
  val_size: int,
  seed: int,
  train_size: int = 0,
  test_size: int = 0,
  test_fraction: float = 0.2,
  num_classes: int | None = None,
) -> Dataset:
  """A ``Dataset`` from the data's splits: a test split carved if there is none,
  validation carved, statistics computed. A dataset of ``DATASETS`` must have its
  known shape; any other takes its shape from the data and its class count from
  ``num_classes`` (else the largest training label + 1), no augmentation by default
  (``train.augment`` chooses) and a crop padding of one eighth of its height."""
  info = DATASETS.get(name)
  if info is not None and train.images.shape[1:] != info.input_shape:
    raise ValueError(
      f"{name}: images are {train.images.shape[1:]}, expected {info.input_shape}"
    )
  carved = test is None
  if carved:
    train, test = carve_test(train, test_fraction)
  train, val = carve_validation(train, val_size, seed)
  available = len(train)
  if train_size > available:
    raise ValueError(
      f"data.train_size={train_size} exceeds the {available} training examples of "
      f"{name} left after carving data.val_size={val_size} (0: all of them)"
    )
  if test_size > len(test):
    raise ValueError(
      f"data.test_size={test_size} exceeds the {len(test)} test examples of {name} "
      f"(0: all of them)"
    )
  # Subsets are seeded class-stratified samples, never the first examples: data read
  # class by class would otherwise keep only its first classes.
  if train_size:
    train = sample(train, train_size, [seed, 2])
  if test_size:
    test = sample(test, test_size, [seed, 3])
  pixels = train.images.reshape(-1, train.images.shape[-1]).astype(np.float64) / 255.0
  mean, std = pixels.mean(0), pixels.std(0)
  if info is not None:
    num_classes, augment, padding = info.num_classes, info.augment, info.crop_padding
  else:
    found = user_data.check_classes(train.labels, test.labels, name)
    if num_classes is None:
      num_classes = found
    elif found > num_classes:
      raise ValueError(
        f"{name}: labels reach {found - 1}, but it has {num_classes} classes"
      )
    augment, padding = "none", max(1, train.images.shape[1] // 8)
  return Dataset(
    name,
    train,
    val,
    test,
    num_classes,
    tuple(float(m) for m in mean),
    tuple(float(max(s, 1e-3)) for s in std),
    augment,
    padding,
    available,
    carved,
  )


def _stamp(path: str) -> tuple:
  """Sizes and modification times of ``path`` and the entries in it (a folder's class
  subfolders too): data rewritten on disk is read again."""
  out = []
  try:
    st = os.stat(path)
  except OSError:
    return ()
  out.append((path, st.st_mtime_ns, st.st_size))
  if os.path.isdir(path):
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
      st = entry.stat()
      out.append((entry.name, st.st_mtime_ns, st.st_size))
  return tuple(out)


@functools.lru_cache(maxsize=2)
def _read(
  source: str,
  name: str,
  data_dir: str,
  download: bool,
  image_size: int,
  channels: int,
  stamp: tuple,
) -> tuple[Split, Split | None, int | None]:
  """The data's (train, test or None, class count or None) as read from disk, kept
  for the process: a search, its promotion rungs and its retraining read it once.
  The arrays are read-only, since every caller shares them."""
  num_classes = None
  if source == "idx":
    train, test = load_fashion_mnist_idx(data_dir)
  elif source == "npz":
    train, test = map(_user_split, user_data.load_npz(name))
  elif source == "folder":
    train, test = map(_user_split, user_data.load_folder(name, image_size, channels))
  else:
    train, test, num_classes = load_tfds(name, data_dir, download)
  for split in (train, test):
    if split is not None:
      split.images.setflags(write=False)
      split.labels.setflags(write=False)
  return train, test, num_classes


def load_dataset(config: DataConfig) -> Dataset:
  """Loads the dataset described by ``config``; the files are read once per process
  and data (``_read``), whatever subset sizes the configs ask for."""
  source = config.resolved_source
  name = config.name if source == "tfds" else os.path.expanduser(config.name)
  if source == "idx":  # the files, compressed or not (not their folder: a workdir
    # made inside it would change the folder's time)
    files = [f for split in idx.fashion_mnist_files(config.data_dir) for f in split]
    where = [p for f in files for p in (f, f.removesuffix(".gz"))]
  else:
    where = [name]
  train, test, num_classes = _read(
    source,
    name,
    config.data_dir,
    config.download,
    config.image_size,
    config.channels,
    tuple(_stamp(w) for w in where) if source != "tfds" else (),
  )
  return make_dataset(
    config.name,
    train,
    test,
    config.val_size,
    config.seed,
    config.train_size,
    config.test_size,
    config.test_fraction,
    num_classes,
  )


# --- batching ----------------------------------------------------------------------------


def train_batches(
  split: Split, batch_size: int, seed: int, epoch: int
) -> Iterator[dict[str, np.ndarray]]:
  """Shuffled full batches of one epoch (the last partial batch is dropped)."""
  if not 0 < batch_size <= len(split):
    raise ValueError(f"train.batch_size must be in [1, {len(split)}], got {batch_size}")
  perm = np.random.default_rng([seed, epoch]).permutation(len(split))
  for start in range(0, len(split) - batch_size + 1, batch_size):
    idx = np.sort(perm[start : start + batch_size])  # sorted: faster gathers, same batch
    yield {"image": split.images[idx], "label": split.labels[idx]}


def eval_batches(split: Split, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """All examples in order, in batches of exactly ``batch_size`` (the last one padded,
  with ``mask`` marking the real examples), so evaluation compiles once."""
  n = len(split)
  for start in range(0, n, batch_size):
    images = split.images[start : start + batch_size]
    labels = split.labels[start : start + batch_size]
    mask = np.ones(len(labels), bool)
    pad = batch_size - len(labels)
    if pad:
      images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.uint8)])
      labels = np.concatenate([labels, np.zeros(pad, np.int32)])
      mask = np.concatenate([mask, np.zeros(pad, bool)])
    yield {"image": images, "label": labels, "mask": mask}
