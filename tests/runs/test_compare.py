"""The strategy comparison on a small generated table."""

import json
import multiprocessing
import os
import sys

import numpy as np
import pytest

from nasq.costs import compute_costs
from nasq.runs import compare, record
from nasq.spaces import NB201Space
from tests.conftest import machine_cores


def test_compare_strategies_on_a_generated_table(tmp_path, table_config, nb201_table):
  space = NB201Space()
  values = nb201_table[1]
  config = table_config()
  config.num_seeds = 1
  config.num_queries = 15
  config.num_initial = 5
  config.processes = 1
  config.cache_dir = str(tmp_path / "cache")
  config.autoencoder.steps = 300
  config.autoencoder.hidden = 64
  config.strategy_config.map_steps = 20
  config.strategy_config.pool_size = 128
  config.settings = ("unconstrained", "params_0.5")
  config.strategies_to_run = ("latent_bo", "random", "evolution", "latent_bo_pof")
  called = set()

  def profile(frame, event, arg):
    if event == "call":
      called.add((frame.f_code.co_filename, frame.f_code.co_name))

  sys.setprofile(profile)  # every Python function the comparison calls
  try:
    summary = compare.compare_strategies(config, tmp_path / "bench")
  finally:
    sys.setprofile(None)
  # The code version leaves out modules that a comparison on a table never runs: it
  # calls nothing in them (latent BO's code, which it hashes, it does run).
  sources = record.imported_sources("nasq.runs.compare")
  left_out = {str(sources[m].resolve()) for m in compare.NOT_RUN_ON_A_TABLE}
  ran = {(os.path.realpath(f), name) for f, name in called}
  assert str(sources["nasq.strategies.latent_bo"].resolve()) in {f for f, _ in ran}
  assert not [(f, name) for f, name in ran if f in left_out]
  table = (tmp_path / "bench" / "table.md").read_text()
  for name in ("latent_bo", "random", "evolution", "latent_bo_pof"):
    assert f"| {name} |" in table
  for setting in ("unconstrained", "params_0.5"):
    assert (tmp_path / "bench" / f"curves_{setting}.png").exists()
    s = summary["settings"][setting]
    for row in s["strategies"].values():
      curve = row["mean_curve"]
      assert len(curve) == 15 and all(np.diff(curve) >= 0)
      assert curve[-1] <= s["table_best"] + 1e-9  # never better than the table's best
  # The budget setting's best is the best cell within half the largest cell's params.
  largest = max(compute_costs(a).params for a in space.all_architectures())
  within = [
    v for k, v in values.items() if compute_costs(space.parse(k)).params <= largest / 2
  ]
  assert summary["settings"]["params_0.5"]["table_best"] == pytest.approx(max(within))
  assert summary["settings"]["unconstrained"]["table_best"] == pytest.approx(
    max(values.values())
  )
  # Every run's history has exactly num_queries evaluations, none repeated.
  for run in (tmp_path / "bench" / "runs").glob("*/*/seed*"):
    records = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if r["status"] in ("ok", "failed")]
    assert len(evaluated) == 15 and len({tuple(r["tokens"]) for r in evaluated}) == 15


def test_unknown_settings_and_evaluators_are_named(tmp_path, table_config):
  config = table_config()
  config.evaluator = "hpobench"
  with pytest.raises(ValueError, match="evaluator must be one of"):
    compare.make_table(config)
  config = table_config()
  config.settings = ("latency",)
  with pytest.raises(ValueError, match="settings must be 'unconstrained' or"):
    compare.compare_strategies(config, tmp_path / "bench")
  config = table_config()
  config.strategies_to_run = ("latent_bo_fast",)
  with pytest.raises(ValueError, match="or the variants"):
    compare.compare_strategies(config, tmp_path / "bench")
  assert not (tmp_path / "bench").exists()


@pytest.mark.skipif(len(machine_cores()) < 2, reason="needs 2 cores to pin")
def test_workers_are_pinned_to_one_core_each():
  """Unpinned, parallel runs' XLA thread pools fight over the same cores."""
  cores = machine_cores()
  with multiprocessing.get_context("spawn").Pool(
    2, compare._pin_worker, (cores,)
  ) as pool:
    seen = pool.map(os.sched_getaffinity, [0] * 8, chunksize=1)
  assert all(len(s) == 1 and s <= set(cores) for s in seen), seen


def test_recorded_runs_are_read_back_only_for_their_code_and_settings(
  tmp_path, table_config, monkeypatch
):
  config = table_config()
  config.num_seeds, config.num_queries, config.num_initial = 2, 12, 4
  config.processes = 1
  config.settings = ("params_0.5",)
  config.strategies_to_run = ("random", "evolution")
  config.record = str(tmp_path / "record.jsonl")
  first = compare.run_all(config, tmp_path / "a")
  rows = record.read(config.record)
  version = compare.code_version()
  assert len(rows) == 4 and {r["code"] for r in rows} == {version}
  # A new workdir: every run comes from the record, nothing is run again.
  again = compare.run_all(config, tmp_path / "b")
  assert not (tmp_path / "b").exists()
  by_run = {(r["strategy"], r["seed"]): r["curve"] for r in first}
  assert {(r["strategy"], r["seed"]): r["curve"] for r in again} == by_run
  # Marked as read back (table.md's footer counts their recorded worker time apart).
  assert all(r["read_back"] for r in again) and not any("read_back" in r for r in first)
  # A killed writer's cut last line is ignored, and the next run starts a line of its own.
  with open(config.record, "a") as f:
    f.write('{"code": "')
  assert len(record.read(config.record)) == 4
  # Another strategy setting, or another code version, is another run.
  config.strategy_config.population_size = 5
  compare.run_all(config, tmp_path / "c")
  assert (tmp_path / "c" / "runs" / "params_0.5" / "evolution").exists()
  assert len(record.read(config.record)) == 8
  # Latent BO's runs are keyed by the trained autoencoder's weights as well.
  assert compare.run_key(config, "params_0.5", "latent_bo", "a") != compare.run_key(
    config, "params_0.5", "latent_bo", "b"
  )
  assert compare.run_key(config, "params_0.5", "random", "a") == compare.run_key(
    config, "params_0.5", "random", "b"
  )
  monkeypatch.setattr(compare, "code_version", lambda: "other")
  compare.run_all(config, tmp_path / "d")
  assert (tmp_path / "d" / "runs" / "params_0.5" / "random").exists()
  assert len(record.read(config.record)) == 12


def test_the_code_version_covers_what_a_comparison_imports():
  sources = record.imported_sources("nasq.runs.compare")
  for module in ("nasq.strategies.latent_bo", "nasq.gp", "nasq.loop", "nasq.spaces"):
    assert module in sources
  assert "nasq.export" not in sources and "nasq.runs.search" not in sources
  # The modules left out of the version are imported, and an edit to any other one
  # changes it.
  left_out = compare.NOT_RUN_ON_A_TABLE + compare.BOOKKEEPING
  assert set(left_out) <= set(sources)
  version = compare.code_version()
  assert record.code_version("nasq.runs.compare") != version
  assert record.code_version("nasq.runs.compare", left_out[1:]) != version
