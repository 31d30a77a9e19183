"""The search driver: settings from a config, the sweep, refusals before any work."""

import importlib
import json
import types

import pytest

from configs import default
from nasq import costs, promotion
from nasq import data as data_lib
from nasq.feasibility import check_budget
from nasq.runs import final, search, workdir
from nasq.runs.config import to_config
from nasq.spaces import make_space, space_config


def test_the_space_takes_the_datas_image_shape_and_classes():
  settings = search.SearchSettings.from_config(default.get_config())
  same = types.SimpleNamespace(input_shape=[28, 28, 1], num_classes=10)
  assert search.for_dataset(settings, same) is settings
  other = types.SimpleNamespace(input_shape=(16, 16, 3), num_classes=4)
  adapted = search.for_dataset(settings, other)
  assert (adapted.space.input_shape, adapted.space.num_classes) == ((16, 16, 3), 4)
  assert adapted.space.ops == settings.space.ops and adapted.data == settings.data
  assert make_space(adapted.space).input_shape == (16, 16, 3)


@pytest.mark.parametrize(
  "field, value, match",
  [
    ("strategy", "grid", "strategy must be one of"),
    ("weight_bits", 12, "weight_bits"),
    ("num_initial", 0, "need 1 <= num_initial <= num_evaluations"),
    ("final_seeds", 0, "final_seeds must be >= 1"),
    ("train.optimizer", "lbfgs", "train.optimizer must be one of"),
    ("budget.macs", -1.0, "budget.macs must be > 0 or None"),
    ("executor.kind", "dask", "executor.kind must be one of"),
    ("data.name", "imagenet", "data.name .imagenet. is not one of"),
    ("space.name", "darts", "space.name must be one of"),
    ("objective.kind", "accuracy", "objective.kind must be one of"),
    ("reference", "fmnist_big", "reference must be one of"),
    ("initial_architectures", ("fmnist_big",), r"initial_architectures\[0\]='fmnist_"),
    ("initial_architectures", ("conv3:s1:c64 " * 3,), "exceeds the budget: .*macs"),
    ("promotion.rungs", "3 epochs", "promotion.rungs must be"),
  ],
)
def test_bad_fields_are_refused_before_the_workdir_is_touched(
  tmp_path, field, value, match
):
  config = default.get_config()
  section, _, name = field.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(ValueError, match=match):
    search.run_search(config, tmp_path / "search")
  assert not (tmp_path / "search").exists()


def test_an_unknown_field_is_named(tmp_path):
  config = default.get_config()
  config.train.epochz = 3
  with pytest.raises(ValueError, match=r"train has unknown fields \['epochz'\]"):
    search.run_search(config, tmp_path / "search")


def test_bit_width_sweep_draws_the_combined_front(tmp_path, fake_fashion_mnist):
  fake_fashion_mnist(tmp_path, n_train=300, n_test=50)
  config = search.default_config()
  config.strategy = "random"
  config.sweep_weight_bits = (8, 4)
  config.num_initial, config.num_evaluations, config.num_final = 2, 3, 1
  config.space.max_layers = 3
  config.space.channels = (4, 8)
  config.budget.model_size_bits = 8000
  config.progress = False
  config.data.data_dir, config.data.val_size = str(tmp_path), 100  # final_data follows
  for train in (config.train, config.final_train):
    train.epochs, train.batch_size, train.progress = 1, 50, False
  config.promotion.rungs = "1x0"
  data_lib._read.cache_clear()
  summaries = search.run_sweep(config, tmp_path / "sweep")
  # Two searches, each with a promotion rung and a retraining: the files read once.
  assert data_lib._read.cache_info().misses == 1
  assert sorted(summaries) == [4, 8]
  assert (tmp_path / "sweep" / "fronts_by_bits.png").stat().st_size > 10_000
  for bits in (4, 8):
    saved = json.loads((tmp_path / "sweep" / f"bits{bits}" / "config.json").read_text())
    assert saved["weight_bits"] == bits
    assert summaries[bits]["records"].get("ok", 0) + summaries[bits]["records"].get(
      "failed", 0
    ) == 3 + sum(promotion.num_planned(3, promotion.PromotionConfig(rungs="1x0")))


@pytest.mark.parametrize("name", ["fmnist_mcu", "fmnist_8kb", "fmnist_mcu_mixed"])
def test_the_flagship_configs_are_valid_and_their_budgets_reachable(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  settings = search.SearchSettings.from_config(config)
  space = make_space(settings.space)
  check_budget(
    space, settings.budget, config.weight_bits, config.activation_bits, 60
  )  # raises if no architecture fits
  # Every promotion rung has candidates to race.
  assert all(promotion.num_planned(config.num_evaluations, settings.promotion))
  if name == "fmnist_mcu_mixed":  # the uniform flagship's search, per-layer bits
    mcu = importlib.import_module("configs.fmnist_mcu").get_config()
    assert tuple(settings.space.weight_bits_choices) == (2, 4, 8)
    assert (config.num_evaluations, config.budget) == (mcu.num_evaluations, mcu.budget)
  if config.reference:
    arch = final.resolve_reference(config.reference, space)
    assert settings.budget.fits(costs.compute_costs(arch, 4).summary())


def test_a_workdir_from_before_a_new_field_resumes_at_its_default(tmp_path):
  config = default.get_config()
  saved = json.loads(config.to_json_best_effort(sort_keys=True))
  del saved["promotion"], saved["reference"]  # fields added later
  del saved["strategies"]["num_neighbours"], saved["train"]["float_epochs"]  # nested
  (tmp_path / "config.json").write_text(json.dumps(saved))
  check = lambda: workdir.check_config(tmp_path, config, search.default_config())  # noqa: E731
  assert check()  # the defaults: accepted, a resume
  # Display and execution fields may change at any depth.
  config.train.progress = not config.train.progress
  config.final_train.progress = not config.final_train.progress
  config.executor.num_workers = 2
  config.compilation_cache_dir = ""
  config.final_seeds = 3  # more retraining seeds on a finished search
  assert check()
  config.reference = "fmnist_ref"
  with pytest.raises(search.ConfigMismatchError, match=r"\['reference'\]"):
    check()
  config.reference = ""
  config.strategies.num_neighbours = 8  # a nested field changed from its default
  with pytest.raises(
    search.ConfigMismatchError, match=r"\['strategies.num_neighbours'\]"
  ):
    check()
  assert not workdir.check_config(tmp_path / "new", config, search.default_config())
  assert not (tmp_path / "new").exists()  # checking writes nothing


@pytest.mark.parametrize(
  "fields, match",
  [
    ({"num_final": 0}, "num_final must be >= 1"),
    ({"space": "nb201"}, "networks of the 'nb201' space cannot be exported"),
  ],
)
def test_an_export_that_cannot_happen_is_refused_before_any_work(tmp_path, fields, match):
  config = default.get_config()
  config.export = True
  if "num_final" in fields:
    config.num_final = fields["num_final"]
  else:
    config.space = to_config(space_config("nb201"))
    config.budget = to_config(costs.Budget())
  with pytest.raises(ValueError, match=match):
    search.run_search(config, tmp_path / "search")
  assert not (tmp_path / "search").exists()
