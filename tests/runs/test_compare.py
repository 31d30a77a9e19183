"""The strategy comparison on a small generated table."""

import contextlib
import json
import multiprocessing
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from nasq.costs import compute_costs
from nasq.runs import compare, record
from nasq.spaces import NB201Space
from tests.conftest import machine_cores


@contextlib.contextmanager
def _functions_called():
  """The (file, name) of every Python function that starts inside the block, seen
  through ``sys.monitoring`` (PEP 669): each function's first start is recorded and
  its event then disabled, so the code runs at nearly full speed (``sys.setprofile``
  traced every call and slowed the comparison about threefold)."""
  mon = sys.monitoring
  tool = next(t for t in range(6) if mon.get_tool(t) is None)
  called: set[tuple[str, str]] = set()

  def on_start(code, offset):
    called.add((code.co_filename, code.co_name))
    return mon.DISABLE

  mon.use_tool_id(tool, "nasq-test-calls")
  try:
    mon.register_callback(tool, mon.events.PY_START, on_start)
    mon.set_events(tool, mon.events.PY_START)
    mon.restart_events()
    yield called
  finally:
    mon.set_events(tool, mon.events.NO_EVENTS)
    mon.register_callback(tool, mon.events.PY_START, None)
    mon.free_tool_id(tool)


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
  with _functions_called() as called:  # every Python function the comparison calls
    summary = compare.compare_strategies(config, tmp_path / "bench")
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
  # A killed writer's cut last line is ignored, and the next append removes it.
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
  assert set(compare.NOT_RUN_ON_A_TABLE + compare.BOOKKEEPING) <= set(sources)


def _version_of_copy(package: Path) -> str:
  return record.code_version(
    "nasq.runs.compare", compare.NOT_RUN_ON_A_TABLE + compare.BOOKKEEPING, package
  )


@pytest.mark.parametrize(
  "module,changes",
  [
    ("gp.py", True),
    ("strategies/latent_bo.py", True),
    ("spaces/nb201.py", True),
    ("runs/compare.py", True),
    ("data.py", False),  # left out: a comparison on a table never runs it
    ("runs/record.py", False),  # bookkeeping
    ("runs/search.py", False),  # not imported by a comparison
  ],
)
def test_an_edit_changes_the_code_version_exactly_when_a_run_could_change(
  tmp_path, module, changes
):
  package = tmp_path / "nasq"
  shutil.copytree(
    record.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__")
  )
  before = _version_of_copy(package)
  assert before == compare.code_version()  # the copy hashes as the package does
  with open(package / module, "a") as f:
    f.write("\n# an edit\n")
  assert (_version_of_copy(package) != before) == changes


def test_a_malformed_line_before_the_end_is_an_error_naming_it(tmp_path):
  path = tmp_path / "record.jsonl"
  path.write_text('{"code": "a", "key": "k", "seed": 0}\nnot json\n{"code": "b"}\n')
  with pytest.raises(ValueError, match=r"record.jsonl:2: not a recorded run"):
    record.read(path)
  path.write_text('{"code": "a", "key": "k", "seed": 0}\n{"code": "b", "se')
  assert record.read(path) == [{"code": "a", "key": "k", "seed": 0}]  # a cut last line


def test_two_results_for_one_run_are_an_error_naming_both_lines():
  row = {"code": "a", "key": "k", "seed": 0, "env_hash": "e", "curve": [1.0]}
  assert len(record.index([row, dict(row)])) == 1  # an identical copy is one row
  with pytest.raises(ValueError, match="lines 1 and 3 record the same run"):
    record.index([row, {**row, "seed": 1}, {**row, "curve": [2.0]}])


def test_latent_bo_rows_of_another_environment_are_not_read_back():
  env = record.environment()
  other = {**env, "cpu": "another CPU"}
  rows = [
    {
      "code": "c",
      "key": "lbo",
      "seed": 0,
      "env": other,
      "env_hash": record.environment_hash(other),
    },
    {"code": "c", "key": "rnd", "seed": 0},  # recorded before environments were
  ]
  recorded = record.index(rows)
  assert record.lookup(recorded, "c", "lbo", 0, env, False) is None
  assert record.lookup(recorded, "c", "lbo", 0, other, False) is rows[0]
  assert record.lookup(recorded, "c", "rnd", 0, env, True) is rows[1]
  assert record.lookup(recorded, "c", "rnd", 0, {**env, "numpy": "0.0"}, True) is rows[1]
  newer = {**rows[1], "env": {**env, "numpy": "0.0"}, "env_hash": "x"}
  assert record.lookup(record.index([newer]), "c", "rnd", 0, env, True) is None


def test_a_run_begun_by_other_code_in_the_same_workdir_starts_over(
  tmp_path, table_config, monkeypatch
):
  config = table_config()
  config.num_seeds, config.num_queries, config.num_initial = 1, 8, 3
  config.processes = 1
  config.settings = ("params_0.5",)
  config.strategies_to_run = ("random",)
  config.record = str(tmp_path / "record.jsonl")
  compare.run_all(config, tmp_path / "w")
  run = tmp_path / "w" / "runs" / "params_0.5" / "random" / "seed0"
  assert json.loads((run / "run.json").read_text())["code"] == compare.code_version()
  # Cut the run short, as a kill would, then change the code: the rerun in the same
  # workdir must not resume the old history and record it under the new version.
  lines = (run / "history.jsonl").read_text().splitlines()
  (run / "history.jsonl").write_text("\n".join(lines[:5]) + "\n")
  monkeypatch.setattr(compare, "code_version", lambda: "other")
  (result,) = compare.run_all(config, tmp_path / "w")
  assert json.loads((run / "run.json").read_text())["code"] == "other"
  records = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
  assert len([r for r in records if r["status"] in ("ok", "failed")]) == 8
  assert result["code"] == "other" and "read_back" not in result
