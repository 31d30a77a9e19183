"""Evaluators: what a search spends its budget on. One call, one architecture.

``QATEvaluator`` trains a candidate with quantization-aware training (``nasq.train``)
and returns its validation accuracy. Every evaluator returns an ``Evaluation``; a
candidate that fails (NaN loss, out of memory) is an ``Evaluation`` with status
``failed``, never an exception.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import ml_collections

from nasq import data as data_lib
from nasq import train as train_lib
from nasq.quant import QuantConfig

OBJECTIVES = ("constrained", "cost")


@dataclasses.dataclass
class Evaluation:
  status: str  # "ok" or "failed"
  metrics: dict[str, Any]
  seconds: float
  reason: str = ""
  variables: Any = dataclasses.field(default=None, repr=False)


class QATEvaluator:
  """Trains with fake-quantized weights on the configured dataset; reports accuracy."""

  def __init__(
    self,
    dataset: data_lib.Dataset,
    train_config: ml_collections.ConfigDict,
    quantization: QuantConfig,
    on_epoch: Callable[[Any, int, dict[str, float]], None] | None = None,
  ):
    self.dataset = dataset
    self.train_config = train_config
    self.quantization = quantization
    self.on_epoch = on_epoch

  def __call__(self, arch: Any, seed: int, keep_variables: bool = False) -> Evaluation:
    start = time.perf_counter()
    config = self.train_config.copy_and_resolve_references()
    config.seed = seed
    callback = None
    if self.on_epoch is not None:
      callback = lambda epoch, m: self.on_epoch(arch, epoch, m)  # noqa: E731
    result = train_lib.train_and_evaluate(
      arch, self.quantization, self.dataset, config, on_epoch=callback
    )
    metrics = {
      "val_accuracy": result.val_accuracy,
      "test_accuracy": result.test_accuracy,
      "train_loss": result.train_loss,
      "epochs": result.epochs_completed,
    }
    return Evaluation(
      result.status,
      metrics,
      time.perf_counter() - start,
      result.failure_reason,
      result.variables if keep_variables else None,
    )


def default_objective_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # "constrained": maximize the metric subject to the budgets. "cost": maximize
  #   metric - params_weight * log10(params) - macs_weight * log10(MACs)
  # (the papers' single scalar trading accuracy against size and operations); the
  # budgets still bound what is trained.
  c.kind = "constrained"
  c.metric = "val_accuracy"  # The evaluation metric to maximize.
  c.params_weight = 0.01  # Accuracy given up per 10x parameters (cost objective).
  c.macs_weight = 0.01  # Accuracy given up per 10x MACs (cost objective).
  return c


def objective_value(
  config: ml_collections.ConfigDict, metrics: dict[str, Any], costs: dict[str, float]
) -> float | None:
  """The scalar a strategy maximizes, or None if the metric is missing or not finite."""
  if config.kind not in OBJECTIVES:
    raise ValueError(
      f"objective.kind must be one of {list(OBJECTIVES)}, got {config.kind!r}"
    )
  value = metrics.get(config.metric)
  if value is None or not math.isfinite(value):
    return None
  if config.kind == "cost":
    value -= config.params_weight * math.log10(max(costs["params"], 1))
    value -= config.macs_weight * math.log10(max(costs["macs"], 1))
  return float(value)
