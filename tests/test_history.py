"""The search history: durable appends, resume, torn lines."""

import dataclasses
import json

import pytest

from nasq.history import History, Record, attribution


def record(i, status="ok", tokens=(1, 2), objective=0.5):
  return Record(
    index=i,
    status=status,
    source="test",
    arch=f"arch{i}",
    tokens=tokens,
    costs={"params": 10.0},
    objective=objective if status == "ok" else None,
  )


def test_append_and_reopen(tmp_path):
  h = History.open(tmp_path)
  h.append(record(0, tokens=(1,)))
  h.append(record(1, status="infeasible", tokens=(2,)))
  h.append(record(2, status="failed", tokens=(3,)))
  again = History.open(tmp_path)
  assert [r.index for r in again] == [0, 1, 2]
  assert again.records == h.records
  assert again.evaluated_index((1,)) == 0 and again.evaluated_index((2,)) is None
  assert again.num_evaluated() == 2 and again.best().index == 0


def test_index_must_be_next(tmp_path):
  h = History.open(tmp_path)
  h.append(record(0))
  with pytest.raises(ValueError, match="the next is 1"):
    h.append(record(0))


def test_a_torn_last_line_is_dropped_and_appends_continue(tmp_path):
  h = History.open(tmp_path)
  h.append(record(0, tokens=(1,)))
  h.append(record(1, tokens=(2,)))
  # A process killed in the middle of writing record 2:
  line = record(2, tokens=(3,)).to_json()
  with open(h.path, "a") as f:
    f.write(line[: len(line) // 2])
  again = History.open(tmp_path)
  assert len(again) == 2
  again.append(record(2, tokens=(4,)))
  lines = again.path.read_text().splitlines()
  assert [json.loads(x)["index"] for x in lines] == [0, 1, 2]
  assert json.loads(lines[2])["tokens"] == [4]


def test_a_corrupt_middle_line_is_an_error_naming_it(tmp_path):
  h = History.open(tmp_path)
  h.append(record(0))
  with open(h.path, "a") as f:
    f.write("garbage\n")
  with pytest.raises(ValueError, match="line 2"):
    History.open(tmp_path)


def test_attribution_counts_proposals_and_improvements_by_origin(tmp_path):
  h = History.open(tmp_path)
  rows = [  # (source, origin, status, objective)
    ("initial", "random", "ok", 0.5),
    ("bo", "neighbour", "ok", 0.4),  # below the initial best: no improvement
    ("bo", "latent_region", "ok", 0.6),  # improvement
    ("bo", "neighbour", "failed", None),
    ("bo", "neighbour", "ok", 0.7),  # improvement
    ("bo", "prior", "infeasible", None),  # not evaluated: not a proposal here
    ("bo", "latent_region", "ok", 0.65),
    ("bo/random", "random", "ok", 0.9),  # improvement
  ]
  for i, (source, origin, status, value) in enumerate(rows):
    r = dataclasses.replace(record(i, status, (i,), value), source=source, origin=origin)
    h.append(r)
  got = attribution(History.open(tmp_path))
  assert list(got) == ["neighbour", "latent_region", "random"]
  assert got["neighbour"] == {"proposals": 3, "improvements": 1, "best": 0.7}
  assert got["latent_region"] == {"proposals": 2, "improvements": 1, "best": 0.65}
  assert got["random"] == {"proposals": 1, "improvements": 1, "best": 0.9}
  # Records written before origins existed read back as "unknown".
  old = json.loads(record(0).to_json())
  del old["origin"]
  assert Record.from_dict(old).origin == ""
