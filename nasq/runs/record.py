"""A record of finished benchmark runs that outlives workdirs and sessions.

One JSON line per run, appended with a single flushed and fsynced write (a killed
writer leaves at most a cut last line, which ``read`` drops; any other line that does
not parse is an error naming it). Each line carries the version of the code that
produced it (``code_version``: a hash of the source of every ``nasq`` module the
benchmark can execute, found by reading the imports) and the numerical environment it
ran in (``environment``: the library versions and the CPU), so a benchmark reads back
only the runs its own code would reproduce and reruns the others.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # nasq/


def imported_sources(root: str, package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
  """The ``nasq`` modules ``root`` imports, directly or not, anywhere in their source
  (imports inside functions included), found by reading the source of the package in
  ``package_dir``: name -> file."""

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


def code_version(
  root: str, exclude: Iterable[str] = (), package_dir: Path = PACKAGE_DIR
) -> str:
  """A hash of the source of every ``nasq`` module ``root`` can execute (what it imports,
  transitively), less the modules in ``exclude`` (ones the caller knows cannot change a
  run): a recorded run counts only for the code version that produced it."""
  exclude = set(exclude)
  digest = hashlib.sha256()
  for name, path in sorted(imported_sources(root, package_dir).items()):
    if name in exclude:
      continue
    digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
  return digest.hexdigest()[:12]


# Libraries whose versions change floating-point results of a run.
NUMERIC_LIBRARIES = ("jax", "jaxlib", "numpy", "scipy", "flax", "optax", "numpyro")


def cpu_model() -> str:
  """The CPU's model name (Linux's /proc/cpuinfo), else the machine's architecture."""
  try:
    with open("/proc/cpuinfo") as f:
      models = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
    if models:
      return models[0]
  except OSError:
    pass
  return platform.machine()


def environment() -> dict[str, str]:
  """What besides the code changes a run's numbers: the numerical libraries' versions,
  the CPU (XLA:CPU compiles for the host's instruction set) and XLA's flags."""
  env = {}
  for name in NUMERIC_LIBRARIES:
    try:
      env[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      env[name] = "absent"
  env["cpu"] = cpu_model()
  env["xla_flags"] = " ".join(sorted(os.environ.get("XLA_FLAGS", "").split()))
  return env


def environment_hash(env: dict[str, str]) -> str:
  return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:12]


def read(path: str | Path) -> list[dict[str, Any]]:
  """The recorded runs, in order. A last line that does not parse (cut by a kill) is
  dropped; any other line that does not parse raises ``ValueError`` naming it."""
  path = Path(path).expanduser()
  if not path.exists():
    return []
  lines = path.read_text().splitlines()
  rows = []
  for number, line in enumerate(lines, start=1):
    try:
      row = json.loads(line)
      if not isinstance(row, dict):
        raise json.JSONDecodeError("not a JSON object", line, 0)
    except json.JSONDecodeError as e:
      if number == len(lines) and line.strip():
        continue  # a cut last line: that run is simply not recorded
      raise ValueError(
        f"{path}:{number}: not a recorded run ({e.msg}): {line[:80]!r}"
      ) from None
    rows.append(row)
  return rows


RUN_FIELDS = ("code", "key", "seed", "env_hash")


def index(rows: list[dict[str, Any]], path: str | Path = "record") -> dict[tuple, dict]:
  """``rows`` by run (``RUN_FIELDS``); two rows of one run with different contents
  raise ``ValueError`` naming both lines (identical copies are one row)."""
  out: dict[tuple, dict[str, Any]] = {}
  where: dict[tuple, int] = {}
  for number, row in enumerate(rows, start=1):
    k = tuple(row.get(f) for f in RUN_FIELDS)
    if k in out and out[k] != row:
      raise ValueError(
        f"{path}: lines {where[k]} and {number} record the same run "
        f"({dict(zip(RUN_FIELDS, k, strict=True))}) with different results; remove "
        f"the wrong one"
      )
    out.setdefault(k, row)
    where.setdefault(k, number)
  return out


def lookup(
  recorded: dict[tuple, dict],
  code: str,
  key: str,
  seed: int,
  env: dict[str, str],
  env_independent: bool,
) -> dict[str, Any] | None:
  """The recorded row of this run, if the code, run key and environment would
  reproduce it. ``env_independent`` runs (measured to repeat on other machines) need
  only the same NumPy, and rows from before the environment was recorded count."""
  row = recorded.get((code, key, seed, environment_hash(env)))
  if row is not None or not env_independent:
    return row
  for (c, k, s, _), row in recorded.items():
    if (c, k, s) == (code, key, seed):
      if row.get("env", {}).get("numpy", env["numpy"]) == env["numpy"]:
        return row
  return None


def append(path: str | Path, row: dict[str, Any]) -> None:
  """Appends ``row`` as one line. A cut last line (a killed writer's) is removed
  first: it never was a record, and left in place it would sit before this one."""
  path = Path(path).expanduser()
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.exists() and path.stat().st_size > 0:
    with path.open("rb+") as f:
      f.seek(-1, os.SEEK_END)
      if f.read(1) != b"\n":
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)
  with path.open("a") as f:
    f.write(json.dumps(row, sort_keys=True) + "\n")
    f.flush()
    os.fsync(f.fileno())
