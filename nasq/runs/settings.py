"""A search's typed settings: every section of its ConfigDict converted (and so checked)
at once, and the one place where the data sections are resolved against each other.

Past ``SearchSettings.from_config`` the search reads these frozen dataclasses only."""

from __future__ import annotations

import dataclasses

import ml_collections

from nasq import autoencoder as ae_lib
from nasq import data as data_lib
from nasq import evaluators, executors, strategies
from nasq import promotion as promotion_lib
from nasq import train as train_lib
from nasq.costs import Budget
from nasq.quant import QuantConfig, check_bits
from nasq.runs.config import from_config, space_from_config
from nasq.spaces import SpaceConfig

# What says which data a section reads.
WHICH_DATA = ("name", "source", "data_dir", "download", "image_size", "channels")
# What ``final_data`` takes from ``data`` unless its ``name`` is set: the data, how its
# test split is carved, its seed, and its validation size (the retraining trains on
# training + validation, so this only keeps a user's small data from failing on
# final_data's default). Its train_size and test_size stay its own (by default all).
FOLLOWED = (*WHICH_DATA, "test_fraction", "seed", "val_size")


def resolve_data_sections(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` with ``final_data`` resolved: where its ``name`` is empty (the
  default) it is the search's data (``FOLLOWED`` from ``data``), so a user who
  sets only ``data.name`` retrains and reports on that data too. A copy; the
  workdir's config.json records the resolved sections."""
  config = config.copy_and_resolve_references()
  if not config.final_data.name:
    default = data_lib.DataConfig(name="")  # the final_data section's default
    for field in FOLLOWED:
      value = config.final_data[field]
      if value != getattr(default, field) and value != config.data[field]:
        raise ValueError(
          f"final_data.{field}={value!r} is set, but final_data follows data (its name "
          f"is empty), whose {field} is {config.data[field]!r}: set data.{field}, or "
          f"name the retraining's data in final_data.name"
        )
    with config.final_data.unlocked():
      for field in FOLLOWED:
        config.final_data[field] = config.data[field]
  return config


def other_final_data(settings: SearchSettings) -> str | None:
  """A sentence saying that the retraining uses other data than the search, or None."""
  data, final = settings.data, settings.final_data
  fields = (*WHICH_DATA, "test_fraction")
  differ = [f for f in fields if getattr(data, f) != getattr(final, f)]
  if not differ:
    return None
  return (
    f"final_data: the retraining and the reported test accuracy use "
    f"{final.name!r} ({', '.join(f'final_data.{f}={getattr(final, f)!r}' for f in differ)}), "
    f"not the search's data {data.name!r}"
  )


def check_one_test_split(settings: SearchSettings, dataset: data_lib.Dataset) -> None:
  """Data without a test split has one carved from its training examples
  (``data.test_fraction``); the retraining, on the same data, must hold out the same
  examples, or the final figure would count images the search trained on."""
  data, final = settings.data, settings.final_data
  same = all(getattr(data, f) == getattr(final, f) for f in WHICH_DATA)
  if dataset.test_carved and same and data.test_fraction != final.test_fraction:
    raise ValueError(
      f"data.test_fraction={data.test_fraction} and final_data.test_fraction="
      f"{final.test_fraction} carve two different test splits from {data.name!r}, which "
      f"has none: the search would train on the final figure's test images. Set them "
      f"equal (or leave final_data.name empty, so final_data follows data)"
    )


@dataclasses.dataclass(frozen=True)
class SearchSettings:
  """Every typed section of a search config, converted (and so checked) at once."""

  space: SpaceConfig
  budget: Budget
  objective: evaluators.Objective
  strategies: strategies.StrategySettings
  autoencoder: ae_lib.AutoencoderConfig
  data: data_lib.DataConfig
  train: train_lib.TrainConfig
  final_data: data_lib.DataConfig
  final_train: train_lib.TrainConfig
  executor: executors.ExecutorConfig
  quantization: QuantConfig
  promotion: promotion_lib.PromotionConfig

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> SearchSettings:
    """Checks the search-level fields, then converts every section (errors name the
    field and the accepted values)."""
    check_bits(config.weight_bits)
    if config.strategy not in strategies.STRATEGIES:
      raise ValueError(
        f"strategy must be one of {list(strategies.STRATEGIES)}, got {config.strategy!r}"
      )
    if config.num_initial < 1 or config.num_evaluations < config.num_initial:
      raise ValueError(
        f"need 1 <= num_initial <= num_evaluations, got num_initial="
        f"{config.num_initial}, num_evaluations={config.num_evaluations}"
      )
    if config.num_final < 0:
      raise ValueError(f"num_final must be >= 0, got {config.num_final}")
    if int(config.final_seeds) < 1:
      raise ValueError(f"final_seeds must be >= 1, got {config.final_seeds}")
    return cls(
      space=space_from_config(config.space),
      budget=from_config(Budget, config.budget, "budget"),
      objective=from_config(evaluators.Objective, config.objective, "objective"),
      strategies=from_config(
        strategies.StrategySettings, config.strategies, "strategies"
      ),
      autoencoder=from_config(
        ae_lib.AutoencoderConfig, config.autoencoder, "autoencoder"
      ),
      data=from_config(data_lib.DataConfig, config.data, "data"),
      train=from_config(train_lib.TrainConfig, config.train, "train"),
      final_data=from_config(data_lib.DataConfig, config.final_data, "final_data"),
      final_train=from_config(train_lib.TrainConfig, config.final_train, "final_train"),
      executor=from_config(executors.ExecutorConfig, config.executor, "executor"),
      quantization=QuantConfig(
        config.weight_bits, config.activation_bits, config.integer_qat
      ),
      promotion=from_config(promotion_lib.PromotionConfig, config.promotion, "promotion"),
    )


def for_dataset(settings: SearchSettings, dataset: data_lib.Dataset) -> SearchSettings:
  """``settings`` with a space that takes ``dataset``'s image shape and classes (a
  user's own data); ``settings`` itself where they already match."""
  shape, classes = tuple(dataset.input_shape), dataset.num_classes
  if (shape, classes) == (tuple(settings.space.input_shape), settings.space.num_classes):
    return settings
  space = dataclasses.replace(settings.space, input_shape=shape, num_classes=classes)
  return dataclasses.replace(settings, space=space)


__all__ = [
  "FOLLOWED",
  "WHICH_DATA",
  "SearchSettings",
  "check_one_test_split",
  "for_dataset",
  "other_final_data",
  "resolve_data_sections",
]
