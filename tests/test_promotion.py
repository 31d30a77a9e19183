"""Successive halving after the search: who is promoted, failures, resume, retraining."""

import json

import numpy as np
import pytest

from nasq import promotion
from nasq.costs import Budget
from nasq.evaluators import Evaluation, Objective
from nasq.executors import LocalExecutor
from nasq.history import History, Record
from nasq.spaces import MacroSpace, macro

SPACE = MacroSpace(
  macro.MacroSpaceConfig(
    input_shape=(8, 8, 1),
    min_layers=1,
    max_layers=3,
    channels=(4, 8),
    ops=("conv3", "dwsep3", "maxpool"),
  )
)
CONFIG = promotion.PromotionConfig(rungs="1x100,1x0", keep=1 / 3, min_keep=2)


def fill(history: History, n: int = 12) -> list[Record]:
  """``n`` distinct architectures evaluated at rung 0 with objective 0.1 * i."""
  rng = np.random.default_rng(0)
  seen, records = set(), []
  while len(records) < n:
    arch = SPACE.sample(rng)
    tokens = tuple(int(t) for t in SPACE.encode(arch))
    if tokens in seen:
      continue
    seen.add(tokens)
    i = len(records)
    records.append(
      history.append(
        Record(
          index=history.next_index,
          status="ok",
          source="initial",
          arch=arch.to_string(),
          tokens=tokens,
          costs={"params": 100.0 + i},
          objective=0.1 * i,
          metrics={"val_accuracy": 0.1 * i},
          seed=i,
        )
      )
    )
  return records


class Scores:
  """An evaluator whose rung is set by the executor factory: the score at rung k
  reverses rung 0's order (so promotions visibly re-rank), optionally failing some
  architectures or stopping after a number of calls."""

  def __init__(self, rank, fail=(), stop_after=None):
    self.rank, self.fail, self.stop_after = rank, set(fail), stop_after
    self.calls: list[tuple[str, int]] = []

  def executor(self, rung):
    def evaluate(arch, seed):
      if self.stop_after is not None and len(self.calls) >= self.stop_after:
        raise KeyboardInterrupt  # the process is killed here
      self.calls.append((arch.to_string(), rung.epochs * 1000 + rung.train_images))
      if arch.to_string() in self.fail:
        return Evaluation("failed", {}, 0.0, "loss is NaN")
      score = 1.0 - self.rank[arch.to_string()] / 100 + rung.train_images / 1e6
      return Evaluation("ok", {"val_accuracy": score}, 0.0)

    return LocalExecutor(evaluate)


def by_rung(history, k):
  return [r for r in history if r.fidelity == k]


def test_the_best_fraction_is_promoted_rung_by_rung(tmp_path):
  history = History.open(tmp_path)
  base = fill(history)
  rank = {r.arch: i for i, r in enumerate(base)}  # rung k favours early records
  scores = Scores(rank)
  promotion.run_promotions(history, SPACE, CONFIG, Objective(), scores.executor)
  rung1, rung2 = by_rung(history, 1), by_rung(history, 2)
  # Rung 1: ceil(12 / 3) = 4, the 4 best at rung 0 (objectives 1.1, 1.0, 0.9, 0.8).
  assert [r.arch for r in rung1] == [r.arch for r in base[::-1][:4]]
  # Rung 2: ceil(4 / 3) = 2 (min_keep 2), the 2 best at rung 1: rung 1 reverses rung
  # 0's order, so these are the 2 weakest of rung 0's top 4.
  assert sorted(r.arch for r in rung2) == sorted(r.arch for r in base[8:10])
  assert {r.source for r in rung1 + rung2} == {"promotion"}
  assert all(r.seed == base[rank[r.arch]].seed for r in rung1 + rung2)
  assert promotion.num_planned(12, CONFIG) == [4, 2]
  # Promotions are not the search's evaluations, nor duplicates of them.
  assert history.num_evaluated() == 12
  assert history.evaluated_index(rung1[0].tokens) == base[11].index
  # Retraining takes the highest rung first, then by objective there.
  ranked = promotion.ranked_for_retraining(history, Budget())
  assert [(r.fidelity, r.arch) for r in ranked[:2]] == [
    (2, base[8].arch),
    (2, base[9].arch),
  ]
  assert [r.fidelity for r in ranked[2:4]] == [1, 1]
  assert len(ranked) == 12  # one per architecture
  # Over budget candidates are never retrained.
  tight = promotion.ranked_for_retraining(history, Budget(params=104))
  assert {r.costs["params"] for r in tight} == {100.0, 101.0, 102.0, 103.0, 104.0}


def test_a_tie_at_the_top_rung_is_broken_by_the_rung_below(tmp_path):
  history = History.open(tmp_path)
  base = fill(history, n=4)
  # Rung 1 ties the two weakest of rung 0 with the strongest; history order puts the
  # weakest first, rung 0 says the strongest should win.
  for r, score in zip(base, (0.9, 0.9, 0.5, 0.9), strict=True):
    history.append(
      Record(
        index=history.next_index,
        status="ok",
        source="promotion",
        arch=r.arch,
        tokens=r.tokens,
        costs=r.costs,
        objective=score,
        fidelity=1,
      )
    )
  ranked = promotion.ranked_for_retraining(history, Budget())
  assert [r.arch for r in ranked] == [
    base[3].arch,
    base[1].arch,
    base[0].arch,
    base[2].arch,
  ]
  assert all(r.fidelity == 1 for r in ranked)


def test_a_failed_promotion_is_recorded_and_goes_no_further(tmp_path):
  history = History.open(tmp_path)
  base = fill(history)
  rank = {r.arch: i for i, r in enumerate(base)}
  scores = Scores(rank, fail={base[9].arch})
  promotion.run_promotions(history, SPACE, CONFIG, Objective(), scores.executor)
  failed = [r for r in by_rung(history, 1) if r.status == "failed"]
  assert [(r.arch, r.reason) for r in failed] == [(base[9].arch, "loss is NaN")]
  # Rung 2 draws from the 3 successful rung 1 candidates only.
  assert base[9].arch not in {r.arch for r in by_rung(history, 2)}
  assert len(by_rung(history, 2)) == 2


def test_a_run_killed_mid_rung_resumes_without_repeating(tmp_path):
  history = History.open(tmp_path / "full")
  base = fill(history)
  rank = {r.arch: i for i, r in enumerate(base)}
  promotion.run_promotions(history, SPACE, CONFIG, Objective(), Scores(rank).executor)
  uninterrupted = [(r.arch, r.fidelity, r.objective) for r in history if r.fidelity]

  history = History.open(tmp_path / "killed")
  fill(history)
  killed = Scores(rank, stop_after=2)  # dies during rung 1 (4 candidates)
  with pytest.raises(KeyboardInterrupt):
    promotion.run_promotions(history, SPACE, CONFIG, Objective(), killed.executor)
  assert len(by_rung(History.open(tmp_path / "killed"), 1)) == 2
  again = Scores(rank)
  resumed = History.open(tmp_path / "killed")
  promotion.run_promotions(resumed, SPACE, CONFIG, Objective(), again.executor)
  assert len(again.calls) == 2 + 2  # the rest of rung 1, then rung 2
  assert [(r.arch, r.fidelity, r.objective) for r in resumed if r.fidelity] == (
    uninterrupted
  )
  # A rerun after completion trains nothing.
  done = Scores(rank)
  promotion.run_promotions(resumed, SPACE, CONFIG, Objective(), done.executor)
  assert done.calls == []


def test_a_record_written_before_fidelities_existed_is_rung_zero(tmp_path):
  history = History.open(tmp_path)
  (record,) = fill(history, 1)
  line = json.loads(record.to_json())
  del line["fidelity"]
  history.path.write_text(json.dumps(line) + "\n")
  again = History.open(tmp_path)
  assert again.records[0].fidelity == 0 and again.num_evaluated() == 1


@pytest.mark.parametrize(
  "fields, message",
  [
    ({"rungs": "3x"}, "promotion.rungs must be"),
    ({"rungs": "0x100"}, "promotion.rungs must be"),
    ({"rungs": "2x-5"}, "promotion.rungs must be"),
    ({"keep": 0.0}, "promotion.keep must be in"),
    ({"min_keep": 0}, "promotion.min_keep must be >= 1"),
  ],
)
def test_bad_settings_name_the_field(fields, message):
  with pytest.raises(ValueError, match=message):
    promotion.PromotionConfig(**fields)


def test_rungs_parse():
  assert promotion.parse_rungs(" 3x12000, 1x0 ") == (
    promotion.Rung(3, 12000),
    promotion.Rung(1, 0),
  )
  assert promotion.parse_rungs("") == ()
