"""Helpers for benchmarks that compare code versions and frameworks side by side.

Each measured variant runs in its own process (XLA reads its flags once per process);
a variant at another commit imports nasq from a git worktree of that commit, checked
out in a temporary directory, so the old and the new code run in one benchmark run on
one machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def commit_of(rev: str) -> str:
  """The full hash of ``rev`` in this repository."""
  out = subprocess.run(
    ["git", "-C", REPO, "rev-parse", "--verify", f"{rev}^{{commit}}"],
    capture_output=True,
    text=True,
    check=False,
  )
  if out.returncode:
    raise ValueError(f"--baseline: {rev!r} is not a commit of {REPO}")
  return out.stdout.strip()


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[str]:
  """A temporary checkout of ``rev`` (its path), removed afterwards."""
  commit = commit_of(rev)
  path = tempfile.mkdtemp(prefix=f"nasq-{commit[:8]}-")
  subprocess.run(
    ["git", "-C", REPO, "worktree", "add", "--detach", path, commit],
    capture_output=True,
    check=True,
  )
  try:
    yield path
  finally:
    subprocess.run(
      ["git", "-C", REPO, "worktree", "remove", "--force", path],
      capture_output=True,
      check=False,
    )


def run_json(
  args: Sequence[str], nasq_root: str | None = None, env: dict | None = None
) -> dict | None:
  """Runs ``python <args>`` and returns the JSON after its ``RESULT `` line, or None
  (printing the error) if it failed. ``nasq_root``: import nasq from that checkout."""
  full_env = dict(os.environ if env is None else env)
  if nasq_root is not None:
    full_env["PYTHONPATH"] = os.pathsep.join(
      p for p in (nasq_root, full_env.get("PYTHONPATH", "")) if p
    )
  proc = subprocess.run(
    [sys.executable, *args], env=full_env, capture_output=True, text=True, check=False
  )
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
  if proc.returncode or not lines:
    print(f"FAILED: {' '.join(args[:3])}\n{proc.stderr[-3000:]}", flush=True)
    return None
  return json.loads(lines[-1][len("RESULT ") :])


def cpu_model() -> str:
  """The CPU's model name (Linux), for the benchmark's header."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return "unknown CPU"
