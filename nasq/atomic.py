"""Directories written whole or not at all: the export's files, the autoencoder cache."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
  """Yields a new temporary sibling of ``directory`` to fill. On a clean exit it takes
  ``directory``'s place (a previous one stays until the new one is ready); on an
  exception it is removed. Readers see the old directory or the new, never half of one.
  A process killed midway leaves a ``.<name>.*.tmp`` sibling: ``remove_leftovers``."""
  directory = Path(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(
    tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent)
  )
  try:
    tmp.chmod(0o755)  # mkdtemp's directory is private; what it becomes is not
    yield tmp
    if directory.exists():
      old = directory.with_name(f".{directory.name}.old.tmp")
      shutil.rmtree(old, ignore_errors=True)
      os.replace(directory, old)
      os.replace(tmp, directory)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def remove_leftovers(directory: str | Path) -> list[Path]:
  """Removes the temporary siblings that killed ``atomic_directory`` writes of
  ``directory`` left; only for a caller that knows no such write is running."""
  directory = Path(directory)
  stale = sorted(directory.parent.glob(f".{directory.name}.*.tmp"))
  for path in stale:
    shutil.rmtree(path, ignore_errors=True)
  return stale
