"""A record of finished benchmark runs that outlives workdirs and sessions.

One JSON line per run, appended with a single flushed and fsynced write (a killed
writer leaves at most a cut last line, which ``read`` drops). Each line carries the
version of the code that produced it (``code_version``: a hash of the source of every
``nasq`` module the benchmark can execute, found by reading the imports), so a
benchmark reads back only the runs its own code would reproduce and reruns the others.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def imported_sources(root: str) -> dict[str, Path]:
  """The ``nasq`` modules ``root`` imports, directly or not, anywhere in their source
  (imports inside functions included), found by reading the source: name -> file."""
  package_dir = Path(__file__).resolve().parents[1]  # nasq/

  def path_of(module: str) -> Path | None:
    path = package_dir.joinpath(*module.split(".")[1:])
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
      if candidate.is_file():
        return candidate
    return None

  found: dict[str, Path] = {}
  todo = [root]
  while todo:
    module = todo.pop()
    path = None if module in found else path_of(module)
    if path is None:
      continue
    found[module] = path
    parts = module.split(".")
    todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        todo += [alias.name for alias in node.names if alias.name.startswith("nasq")]
      elif isinstance(node, ast.ImportFrom):
        if node.level:
          anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
          base = ".".join(anchor + ([node.module] if node.module else []))
        else:
          base = node.module or ""
        if base == "nasq" or base.startswith("nasq."):
          todo.append(base)
          todo += [f"{base}.{alias.name}" for alias in node.names]
  return found


def code_version(root: str, exclude: Iterable[str] = ()) -> str:
  """A hash of the source of every ``nasq`` module ``root`` can execute (what it imports,
  transitively), less the modules in ``exclude`` (ones the caller knows cannot change a
  run): a recorded run counts only for the code version that produced it."""
  exclude = set(exclude)
  digest = hashlib.sha256()
  for name, path in sorted(imported_sources(root).items()):
    if name in exclude:
      continue
    digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
  return digest.hexdigest()[:12]


def read(path: str | Path) -> list[dict[str, Any]]:
  """The recorded runs; a line that does not parse (a last line cut by a kill) is
  dropped."""
  path = Path(path).expanduser()
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows


def append(path: str | Path, row: dict[str, Any]) -> None:
  """Appends ``row`` as one line (after a cut last line, on a line of its own)."""
  path = Path(path).expanduser()
  path.parent.mkdir(parents=True, exist_ok=True)
  cut = False
  if path.exists() and path.stat().st_size > 0:
    with path.open("rb") as f:
      f.seek(-1, os.SEEK_END)
      cut = f.read(1) != b"\n"
  with path.open("a") as f:
    f.write(("\n" if cut else "") + json.dumps(row, sort_keys=True) + "\n")
    f.flush()
    os.fsync(f.fileno())
