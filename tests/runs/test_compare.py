"""The strategy comparison on a small generated table."""

import json
import multiprocessing
import os

import numpy as np
import pytest

from nasq.costs import compute_costs
from nasq.runs import compare
from nasq.spaces import NB201Space


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
  summary = compare.compare_strategies(config, tmp_path / "bench")
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


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to pin")
def test_workers_are_pinned_to_one_core_each():
  """Unpinned, parallel runs' XLA thread pools fight over the same cores."""
  cores = sorted(os.sched_getaffinity(0))
  with multiprocessing.get_context("spawn").Pool(
    2, compare._pin_worker, (cores,)
  ) as pool:
    seen = pool.map(os.sched_getaffinity, [0] * 8, chunksize=1)
  assert all(len(s) == 1 and s <= set(cores) for s in seen), seen
