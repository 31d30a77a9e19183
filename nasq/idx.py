"""IDX files, the format of MNIST and Fashion-MNIST, and the offline Fashion-MNIST of
Debian's ``dataset-fashion-mnist`` package."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


class DatasetNotFoundError(FileNotFoundError):
  """The dataset's files are not on this machine."""


_IDX_DTYPES = {
  0x08: np.uint8,
  0x09: np.int8,
  0x0B: ">i2",
  0x0C: ">i4",
  0x0D: ">f4",
  0x0E: ">f8",
}


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
    raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
  ndim = data[3]
  dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
  dtype = np.dtype(_IDX_DTYPES[data[2]])
  body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
  if body.size != int(np.prod(dims)):
    raise ValueError(
      f"{path}: header says {dims} ({int(np.prod(dims))} values) but the "
      f"file holds {body.size}"
    )
  return body.reshape(dims)


def fashion_mnist_files(data_dir: str = "") -> list[list[str]]:
  """The gzipped IDX files of Fashion-MNIST's (train, test) splits, each [images,
  labels], in ``data_dir`` (default: Debian's package's folder); each may also stand
  there uncompressed, without ``.gz``."""
  data_dir = data_dir or FASHION_MNIST_DIR
  return [
    [
      os.path.join(data_dir, f"{prefix}-{kind}-ubyte.gz")
      for kind in ("images-idx3", "labels-idx1")
    ]
    for prefix in ("train", "t10k")
  ]


def load_fashion_mnist(data_dir: str = "") -> list[tuple[np.ndarray, np.ndarray]]:
  """The official (train, test) (images uint8 [N, 28, 28, 1], labels int32 [N]) of the
  IDX files of Debian's package (``dataset-fashion-mnist``), or of ``data_dir``."""
  splits = []
  for paths in fashion_mnist_files(data_dir):
    for p in paths:
      if not os.path.exists(p) and not os.path.exists(p[:-3]):
        raise DatasetNotFoundError(
          f"Fashion-MNIST file {p} not found. Install the offline copy with "
          f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), point "
          f"data.data_dir at a folder holding the four IDX files, or use "
          f"data.source='tfds' with a network."
        )
    paths = [p if os.path.exists(p) else p[:-3] for p in paths]
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.shape != images.shape[:1]:
      raise ValueError(f"unexpected IDX shapes {images.shape}, {labels.shape}")
    splits.append((images[..., None].astype(np.uint8), labels.astype(np.int32)))
  return splits
