"""The on-disk record of a search: append-only JSON lines in the workdir.

One record per proposed architecture that reached the budget check: evaluated (``ok`` or
``failed``), or rejected without training (``infeasible``: over a budget; ``duplicate``:
already evaluated, the record says which). Each record is one line, written with a single
``write`` of the whole line, then flushed and fsynced, so a killed process leaves at most
one partial last line. ``History.open`` drops such a line (it was never acknowledged) and
continues numbering after the last complete record, so a rerun with the same workdir
resumes without losing or repeating a record.

A record's ``fidelity`` is 0 for the search's own evaluations and ``k >= 1`` for a
promotion to rung ``k`` of successive halving (``nasq.promotion``): the same
architecture trained longer. The search-level queries (``evaluated``, ``successful``,
``num_evaluated``, ``best``, duplicate detection) look at fidelity 0 unless told
otherwise, so promotions never count as the search's evaluations or as duplicates.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_INFEASIBLE = "infeasible"
STATUS_DUPLICATE = "duplicate"
STATUSES = (STATUS_OK, STATUS_FAILED, STATUS_INFEASIBLE, STATUS_DUPLICATE)
EVALUATED = (STATUS_OK, STATUS_FAILED)


@dataclasses.dataclass(frozen=True)
class Record:
  """One line of the history."""

  index: int
  status: str
  source: str  # which strategy (or phase) proposed it: initial, latent_bo, random, ...
  arch: str  # the architecture's canonical string
  tokens: tuple[int, ...]
  costs: dict[str, float]
  objective: float | None = None  # what the strategy maximizes (None unless ok)
  metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
  latent: tuple[float, ...] | None = None  # the architecture's latent code, if any
  seed: int = 0
  seconds: float = 0.0  # evaluation wall time
  duplicate_of: int | None = None  # index of the evaluated record it repeats
  reason: str = ""  # why it was rejected or failed
  fidelity: int = 0  # 0: the search's evaluation; k >= 1: promotion rung k
  # Where within its strategy the proposal came from (``Proposal.origin``): random,
  # mutation, latent_region, prior, neighbour; "" for older records and promotions.
  origin: str = ""

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> Record:
    d = dict(d)
    d["tokens"] = tuple(d["tokens"])
    if d.get("latent") is not None:
      d["latent"] = tuple(d["latent"])
    if d["status"] not in STATUSES:
      raise ValueError(
        f"unknown record status {d['status']!r}; expected one of {STATUSES}"
      )
    return cls(**d)


class History:
  """Append-only records of one search; see the module docstring."""

  FILENAME = "history.jsonl"

  def __init__(self, path: Path, records: list[Record]):
    self.path = path
    self.records = records
    self._by_tokens = {}
    for r in records:
      if r.status in EVALUATED and r.fidelity == 0:
        self._by_tokens.setdefault(r.tokens, r.index)

  @classmethod
  def open(cls, workdir: str | Path) -> History:
    """Opens (creating if needed) ``workdir/history.jsonl``, dropping a torn last line."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / cls.FILENAME
    records: list[Record] = []
    if path.exists():
      raw = path.read_bytes()
      complete = raw[: raw.rfind(b"\n") + 1]  # only newline-terminated lines count
      if len(complete) != len(raw):
        with open(path, "r+b") as f:  # drop the torn tail so appends start clean
          f.truncate(len(complete))
          f.flush()
          os.fsync(f.fileno())
      for number, line in enumerate(complete.decode().splitlines(), start=1):
        if not line.strip():
          continue
        try:
          record = Record.from_dict(json.loads(line))
        except (ValueError, TypeError, KeyError) as e:
          raise ValueError(f"{path}, line {number}: not a history record ({e})") from e
        if record.index != len(records):
          raise ValueError(
            f"{path}, line {number}: record index {record.index}, expected {len(records)}"
          )
        records.append(record)
    return cls(path, records)

  def __len__(self) -> int:
    return len(self.records)

  def __iter__(self) -> Iterator[Record]:
    return iter(self.records)

  @property
  def next_index(self) -> int:
    return len(self.records)

  def append(self, record: Record) -> Record:
    """Writes ``record`` durably (it must carry ``next_index``) and returns it."""
    if record.index != self.next_index:
      raise ValueError(f"record index {record.index}; the next is {self.next_index}")
    line = (record.to_json() + "\n").encode()
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, line)
      os.fsync(fd)
    finally:
      os.close(fd)
    self.records.append(record)
    if record.status in EVALUATED and record.fidelity == 0:
      self._by_tokens.setdefault(record.tokens, record.index)
    return record

  def evaluated_index(self, tokens: tuple[int, ...]) -> int | None:
    """Index of the search's evaluated record of these tokens, or None."""
    return self._by_tokens.get(tuple(tokens))

  def evaluated(self, fidelity: int | None = 0) -> list[Record]:
    """Evaluated records (ok or failed) at ``fidelity`` (None: every fidelity)."""
    return [
      r for r in self.records if r.status in EVALUATED and fidelity in (None, r.fidelity)
    ]

  def successful(self, fidelity: int | None = 0) -> list[Record]:
    return [r for r in self.evaluated(fidelity) if r.status == STATUS_OK]

  def num_evaluated(self, source: str | None = None, fidelity: int | None = 0) -> int:
    return sum(1 for r in self.evaluated(fidelity) if source in (None, r.source))

  def best(self, fidelity: int | None = 0) -> Record | None:
    ok = self.successful(fidelity)
    return max(ok, key=lambda r: r.objective) if ok else None


def attribution(history: History) -> dict[str, dict[str, Any]]:
  """Where the strategy's evaluated proposals came from (``Record.origin``; the initial
  design left out): per origin, how many were evaluated, how many of them set a new best
  objective (over every earlier evaluation, initial design included), and their best.
  Rows in order of first appearance; origin "" (older records) reads "unknown"."""
  best = float("-inf")
  rows: dict[str, dict[str, Any]] = {}
  for r in history.evaluated():
    value = r.objective if r.status == STATUS_OK else None
    if r.source != "initial":
      row = rows.setdefault(
        r.origin or "unknown", {"proposals": 0, "improvements": 0, "best": None}
      )
      row["proposals"] += 1
      if value is not None:
        row["improvements"] += int(value > best)
        row["best"] = value if row["best"] is None else max(row["best"], value)
    if value is not None:
      best = max(best, value)
  return rows
