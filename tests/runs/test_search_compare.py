"""Strategies compared on real (tiny) searches: paired initial designs, resume, refusals."""

import importlib.util
from pathlib import Path

import pytest

from nasq.history import History, Record
from nasq.runs import search, search_compare
from nasq.runs.config import ConfigError


def _tiny_config(tmp_path):
  config = search_compare.add_fields(search.default_config())
  config.compare_strategies = ("random", "evolution")
  config.compare_seeds = (0, 1)
  config.num_initial, config.num_evaluations, config.num_final = 2, 3, 0
  config.space.max_layers = 3
  config.space.channels = (4, 8)
  config.budget.model_size_bits = 8000
  config.progress = False
  config.strategies.population_size = 2
  config.strategies.tournament_size = 1
  config.data.data_dir = str(tmp_path)
  config.data.val_size = 100
  config.train.epochs, config.train.batch_size, config.train.progress = 1, 50, False
  return config


def test_searches_share_their_initial_design_and_resume(tmp_path, fake_fashion_mnist):
  fake_fashion_mnist(tmp_path, n_train=200, n_test=50)
  config = _tiny_config(tmp_path)
  rows = search_compare.compare_searches(config, tmp_path / "cmp")
  assert sorted(rows) == [f"{s}/seed{k}" for s in ("evolution", "random") for k in (0, 1)]
  for seed in (0, 1):
    a, b = rows[f"random/seed{seed}"], rows[f"evolution/seed{seed}"]
    assert a["evaluated"] == b["evaluated"] == 3
    assert a["initial_mean"] == b["initial_mean"]  # the same candidates, same scores
    assert a["proposals"] + 2 == a["evaluated"] - a["failed"]
  designs = [
    [r.tokens for r in History.open(tmp_path / "cmp" / "random" / f"seed{k}")][:2]
    for k in (0, 1)
  ]
  assert designs[0] != designs[1]  # each seed draws its own design
  text = (tmp_path / "cmp" / "search_table.md").read_text()
  assert "| 1 | evolution |" in text and "random best >= evolution best in" in text
  sizes = {p: p.stat().st_size for p in (tmp_path / "cmp").glob("*/seed*/history.jsonl")}
  assert len(sizes) == 4
  search_compare.compare_searches(config, tmp_path / "cmp")  # resumes: nothing new
  assert {p: p.stat().st_size for p in sizes} == sizes
  # Evolution's design was copied from random's, and is what evolution's own search,
  # alone, trains: the same architectures, training seeds and scores.
  solo = tmp_path / "solo"
  search.run_search(search_compare._search_config(config, "evolution", 1), solo)
  initial = lambda h: [  # noqa: E731
    (r.tokens, r.seed, r.objective) for r in History.open(h) if r.source == "initial"
  ]
  copied = tmp_path / "cmp" / "evolution" / "seed1"
  assert initial(solo) == initial(copied) == initial(tmp_path / "cmp/random/seed1")
  assert len(initial(solo)) == 2


def test_an_unfinished_design_is_not_shared(tmp_path):
  source, target = tmp_path / "a", tmp_path / "b"
  h = History.open(source)
  h.append(_record(0, "initial", (1, 2), 0.5))
  assert not search_compare.share_initial_design(source, target, num_initial=2)
  assert not (target / "history.jsonl").exists()
  h.append(_record(1, "initial", (2, 2), 0.6))
  h.append(_record(2, "random", (3, 2), 0.7))
  assert search_compare.share_initial_design(source, target, num_initial=2)
  assert [r.index for r in History.open(target)] == [0, 1]  # the design, no proposal
  assert not search_compare.share_initial_design(source, target, num_initial=2)


def _record(index, source, tokens, objective):
  return Record(index, "ok", source, "a", tokens, {"params": 1.0}, objective)


def test_a_comparison_whose_initial_designs_differ_is_refused(tmp_path):
  histories = {}
  for strategy, score in (("random", 0.5), ("evolution", 0.6)):
    h = History.open(tmp_path / strategy)
    h.append(_record(0, "initial", (1, 2), score))
    h.append(_record(1, strategy, (2, 2), 0.7))
    histories[(strategy, 0)] = h
  with pytest.raises(ValueError, match="seed 0: the strategies' initial designs differ"):
    search_compare.summarize(histories, num_initial=1)
  histories[("evolution", 0)].records[0] = _record(0, "initial", (1, 2), 0.5)
  rows = search_compare.summarize(histories, num_initial=1)
  assert rows["evolution/seed0"]["proposal_mean"] == 0.7
  assert rows["evolution/seed0"]["initial_mean"] == 0.5


def test_bad_strategy_lists_are_refused_before_any_search(tmp_path):
  config = _tiny_config(tmp_path)
  config.compare_strategies = ("random", "grid")
  with pytest.raises(ConfigError, match="compare_strategies must be a non-empty tuple"):
    search_compare.compare_searches(config, tmp_path / "cmp")
  assert not (tmp_path / "cmp").exists()


def test_the_config_file_is_the_default_search_without_retraining():
  path = Path(__file__).parents[2] / "configs" / "compare_search.py"
  spec = importlib.util.spec_from_file_location("compare_search", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert config.num_final == 0 and config.num_evaluations == 20
  assert tuple(config.compare_strategies) == (
    "latent_bo",
    "token_bo",
    "random",
    "evolution",
  )
  assert tuple(config.compare_seeds) == (0, 1, 2)
