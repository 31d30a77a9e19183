"""A search's typed settings: sections converted, final_data resolved against data, one
test split."""

import dataclasses

import numpy as np
import pytest

from configs import default
from nasq import data as data_lib
from nasq import train as train_lib
from nasq.costs import Budget
from nasq.runs import search
from nasq.runs import settings as settings_lib


def test_every_section_becomes_its_typed_settings_with_the_values_set():
  config = default.get_config()
  config.train.epochs, config.budget.macs = 3, 1e6
  config.space.ops = ["conv3", "maxpool"]  # a list from the command line
  s = settings_lib.SearchSettings.from_config(config)
  assert isinstance(s.train, train_lib.TrainConfig) and s.train.epochs == 3
  assert isinstance(s.budget, Budget) and s.budget.macs == 1e6
  assert s.space.ops == ("conv3", "maxpool")
  assert isinstance(s.data, data_lib.DataConfig)


def test_final_data_follows_data_unless_it_is_named():
  """A user who sets only data.name retrains and reports on that data, with the
  retraining's own subset sizes (all of it), and nothing is said; naming other data
  for final_data is kept and said."""
  config = default.get_config()
  config.data.name, config.data.source, config.data.data_dir = "mnist", "tfds", "/d"
  config.data.val_size = 500
  resolved = settings_lib.resolve_data_sections(config)
  assert config.final_data.name == ""  # the caller's config is not changed
  final = resolved.final_data
  assert (final.name, final.source, final.data_dir) == ("mnist", "tfds", "/d")
  assert resolved.data.train_size == 12_000 and final.train_size == 0
  assert final.val_size == 500
  s = settings_lib.SearchSettings.from_config(resolved)
  assert settings_lib.other_final_data(s) is None

  # A followed field set on final_data alone would be overwritten: refused, named.
  config.final_data.image_size = 32
  with pytest.raises(ValueError, match="final_data.image_size=32 is set, but"):
    settings_lib.resolve_data_sections(config)
  config.final_data.image_size = 0

  config.final_data.name = "fashion_mnist"
  s = settings_lib.SearchSettings.from_config(settings_lib.resolve_data_sections(config))
  notice = settings_lib.other_final_data(s)
  assert "'fashion_mnist'" in notice and "not the search's data 'mnist'" in notice


def _carved(test_carved: bool) -> data_lib.Dataset:
  split = data_lib.Split(np.zeros((4, 2, 2, 1), np.uint8), np.zeros(4, np.int32))
  return data_lib.Dataset(
    "x.npz", split, split, split, 2, (0.5,), (0.2,), "none", 1, 4, test_carved
  )


@pytest.mark.parametrize("carved", [True, False])
def test_one_test_split_for_the_search_and_the_retraining(carved):
  config = default.get_config()
  config.data.name = "x.npz"
  config.final_data.name = "x.npz"
  config.final_data.test_fraction = 0.3
  s = settings_lib.SearchSettings.from_config(settings_lib.resolve_data_sections(config))
  if carved:
    with pytest.raises(ValueError, match="final_data.test_fraction=0.3 carve two"):
      settings_lib.check_one_test_split(s, _carved(True))
  else:  # the data has its own test split: the fractions carve nothing
    settings_lib.check_one_test_split(s, _carved(False))
  same = dataclasses.replace(s, final_data=dataclasses.replace(s.data, train_size=0))
  settings_lib.check_one_test_split(same, _carved(True))


def test_the_search_refuses_two_test_splits_before_any_work(tmp_path):
  """The end-to-end refusal: npz data without a test split, and final_data carving
  another one."""
  rng = np.random.default_rng(0)
  path = tmp_path / "d.npz"
  np.savez(
    path,
    x_train=rng.integers(0, 255, (200, 28, 28), np.uint8),
    y_train=np.arange(200) % 10,
  )
  config = default.get_config()
  config.data.name = str(path)
  config.data.val_size, config.data.train_size = 20, 0
  config.final_data.name = str(path)
  config.final_data.test_fraction, config.final_data.val_size = 0.5, 20
  with pytest.raises(ValueError, match="carve two different test splits"):
    search.run_search(config, tmp_path / "w")
  assert not (tmp_path / "w" / "history.jsonl").exists()
