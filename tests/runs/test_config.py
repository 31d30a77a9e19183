"""Config sections <-> typed settings."""

import dataclasses
import json

import pytest

from nasq import autoencoder, data, evaluators, executors, strategies, train
from nasq.costs import Budget
from nasq.runs.config import from_config, space_from_config, to_config
from nasq.spaces import MacroSpaceConfig, NB201SpaceConfig, space_config

SETTINGS = [
  Budget(macs=3e7),
  evaluators.Objective(kind="cost"),
  strategies.StrategySettings(kernel="rbf"),
  autoencoder.AutoencoderConfig(latent_dim=8),
  data.DataConfig(train_size=6000),
  train.TrainConfig(epochs=2),
  executors.ExecutorConfig(num_workers=3),
  MacroSpaceConfig(weight_bits_choices=(2, 4, 8)),
  NB201SpaceConfig(),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: type(s).__name__)
def test_round_trip(settings):
  section = to_config(settings)
  assert sorted(section.keys()) == sorted(f.name for f in dataclasses.fields(settings))
  assert from_config(type(settings), section, "x") == settings
  # Through JSON (how a workdir stores it): lists become tuples again.
  again = json.loads(section.to_json_best_effort())
  assert from_config(type(settings), again, "x") == settings


def test_unset_fields_are_typed_for_the_command_line():
  section = to_config(Budget())
  section.peak_activation_bytes = 65536  # an int where a float is declared
  assert from_config(Budget, section, "budget").peak_activation_bytes == 65536.0
  with pytest.raises(TypeError):
    section.macs = "a lot"
  space = to_config(MacroSpaceConfig())
  space.weight_bits_choices = (4, 8)
  assert space_from_config(space).weight_bits_choices == (4, 8)


def test_unknown_fields_and_spaces_are_named():
  section = to_config(train.TrainConfig())
  section.epochz = 3
  with pytest.raises(ValueError, match=r"train has unknown fields \['epochz'\]"):
    from_config(train.TrainConfig, section, "train")
  section = to_config(space_config("macro"))
  section.name = "darts"
  with pytest.raises(ValueError, match="space.name must be one of"):
    space_from_config(section)
