"""Evaluators: what a search spends its budget on. One call, one architecture.

``QATEvaluator`` trains a candidate with quantization-aware training (``nasq.train``)
and returns its validation accuracy. Every evaluator returns an ``Evaluation``; a
candidate that fails (NaN loss, out of memory) is an ``Evaluation`` with status
``failed``, never an exception.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp

from nasq import data as data_lib
from nasq import train as train_lib
from nasq.models import BatchNorm
from nasq.quant import QuantConfig
from nasq.spaces import Architecture, SearchSpace
from nasq.spaces.nb201 import NB201Architecture

OBJECTIVES = ("constrained", "cost")


@dataclasses.dataclass
class Evaluation:
  status: str  # "ok" or "failed"
  metrics: dict[str, Any]
  seconds: float
  reason: str = ""
  variables: Any = dataclasses.field(default=None, repr=False)


@runtime_checkable
class Evaluator(Protocol):
  """Scores one architecture; a failure is an ``Evaluation`` with status ``failed``."""

  def __call__(self, arch: Architecture, seed: int) -> Evaluation: ...


@dataclasses.dataclass(frozen=True)
class Objective:
  """The scalar a search maximizes (the ``objective`` section).

  ``constrained``: maximize ``metric`` subject to the budgets. ``cost``: maximize
  ``metric - params_weight * log10(params) - macs_weight * log10(MACs)`` (the papers'
  single scalar trading accuracy against size and operations); the budgets still bound
  what is trained.
  """

  kind: str = "constrained"  # "constrained" or "cost".
  metric: str = "val_accuracy"  # The evaluation metric to maximize.
  params_weight: float = 0.01  # Accuracy given up per 10x parameters (cost objective).
  macs_weight: float = 0.01  # Accuracy given up per 10x MACs (cost objective).

  def __post_init__(self):
    if self.kind not in OBJECTIVES:
      raise ValueError(
        f"objective.kind must be one of {list(OBJECTIVES)}, got {self.kind!r}"
      )

  def value(self, metrics: dict[str, Any], costs: dict[str, float]) -> float | None:
    """The objective of one evaluation, or None if the metric is missing or not finite."""
    value = metrics.get(self.metric)
    if value is None or not math.isfinite(value):
      return None
    if self.kind == "cost":
      value -= self.params_weight * math.log10(max(costs["params"], 1))
      value -= self.macs_weight * math.log10(max(costs["macs"], 1))
    return float(value)

  def judge(
    self, result: Evaluation, costs: dict[str, float]
  ) -> tuple[str, float | None, str]:
    """(status, objective, reason) to record for an evaluation: a successful one
    without the objective's metric is recorded as failed, naming the metric."""
    if result.status != train_lib.STATUS_OK:
      return result.status, None, result.reason
    value = self.value(result.metrics, costs)
    if value is None:
      return train_lib.STATUS_FAILED, None, f"objective metric {self.metric} missing"
    return result.status, value, result.reason


class QATEvaluator:
  """Trains with fake-quantized weights on the configured dataset; reports accuracy."""

  def __init__(
    self,
    dataset: data_lib.Dataset,
    train_config: train_lib.TrainConfig,
    quantization: QuantConfig,
    on_epoch: Callable[[Architecture, int, dict[str, float]], None] | None = None,
  ):
    self.dataset = dataset
    self.train_config = train_config
    self.quantization = quantization
    self.on_epoch = on_epoch

  def __call__(
    self, arch: Architecture, seed: int, keep_variables: bool = False
  ) -> Evaluation:
    start = time.perf_counter()
    config = dataclasses.replace(self.train_config, seed=seed)
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


# --- tabular benchmarks -----------------------------------------------------------------


class TableEvaluator:
  """Looks architectures up in a table: NAS-Bench-201 string -> metrics.

  Built from a CSV (a header row with an ``arch`` column and metric columns) or a JSON
  file (``{"arch string": {"metric": value, ...}, ...}`` or a list of objects with an
  ``arch`` field), or from a dict. Strings are normalized through the space's parser, so
  any accepted spelling matches.
  """

  def __init__(self, table: dict[str, dict[str, float]], metric: str, space: SearchSpace):
    if not table:
      raise ValueError("the benchmark table is empty")
    metrics = set().union(*(row.keys() for row in table.values()))
    if metric not in metrics:
      raise ValueError(f"table metric must be one of {sorted(metrics)}, got {metric!r}")
    self.metric = metric
    self.space = space
    self.table = {space.parse(k).to_string(): v for k, v in table.items()}

  @classmethod
  def from_file(cls, path: str, metric: str, space: SearchSpace) -> TableEvaluator:
    p = Path(path)
    if p.suffix == ".csv":
      with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
      if not rows or "arch" not in rows[0]:
        raise ValueError(f"{path}: a CSV table needs an 'arch' column")
      table = {
        r["arch"]: {k: float(v) for k, v in r.items() if k != "arch" and v != ""}
        for r in rows
      }
    elif p.suffix == ".json":
      raw = json.loads(p.read_text())
      if isinstance(raw, list):
        table = {r["arch"]: {k: v for k, v in r.items() if k != "arch"} for r in raw}
      else:
        table = raw
    else:
      raise ValueError(f"{path}: table files must be .csv or .json")
    return cls(table, metric, space)

  def best(
    self, feasible: Callable[[Architecture], bool] | None = None
  ) -> tuple[str, float]:
    """The table's best (architecture string, metric) among ``feasible`` ones."""
    rows = [
      (k, v[self.metric])
      for k, v in self.table.items()
      if self.metric in v and (feasible is None or feasible(self.space.parse(k)))
    ]
    return max(rows, key=lambda kv: kv[1])

  def __call__(self, arch: Architecture, seed: int = 0) -> Evaluation:
    row = self.table.get(arch.to_string())
    if row is None or self.metric not in row:
      return Evaluation("failed", {}, 0.0, f"{arch.to_string()} is not in the table")
    return Evaluation("ok", {self.metric: float(row[self.metric])}, 0.0)


class FixedCostEvaluator:
  """Wraps an evaluator and keeps a CPU core busy ``seconds`` per evaluation: a stand-in
  for training with a known cost, for measuring executors and asynchronous search."""

  def __init__(self, inner: Evaluator, seconds: float):
    if not seconds >= 0:
      raise ValueError(f"eval_seconds must be >= 0, got {seconds}")
    self.inner = inner
    self.seconds = float(seconds)

  def __call__(self, arch: Architecture, seed: int = 0) -> Evaluation:
    start = time.perf_counter()
    result = self.inner(arch, seed)
    x = 1.0
    while time.perf_counter() - start < self.seconds:
      for _ in range(10_000):
        x = (x * 1.000001) % 7.0
    result.seconds = time.perf_counter() - start
    return result


def build_qat_evaluator(
  data_config: data_lib.DataConfig,
  train_config: train_lib.TrainConfig,
  quantization: QuantConfig,
) -> QATEvaluator:
  """Loads the dataset and returns the training evaluator (a Ray worker's factory)."""
  return QATEvaluator(data_lib.load_dataset(data_config), train_config, quantization)


# AnalogNAS-Bench keys are 6-tuples of op indices in this order ...
ANALOGNAS_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
# ... and NAS-Bench-201 edge k (nasq.spaces.nb201.EDGES order) is key position
# ANALOGNAS_EDGE_ORDER[k]. Checked against the data: with this order every cell whose
# output is disconnected from its input sits at chance (10%) and every connected one
# above 35%; with the identity order both groups reach 90% (tests/test_evaluators.py).
ANALOGNAS_EDGE_ORDER = (0, 1, 3, 2, 4, 5)
ANALOGNAS_METRICS = (
  "baseline_accuracy",
  "ptq_accuracy",
  "qat_accuracy",
  "noisy_accuracy",
  "analog_accuracy",
)


def analognas_key_to_string(key: tuple[int, ...]) -> str:
  """The NAS-Bench-201 string of an AnalogNAS-Bench key."""
  ops = tuple(ANALOGNAS_OPS[key[ANALOGNAS_EDGE_ORDER[k]]] for k in range(6))
  return NB201Architecture(ops).to_string()


def load_analognas_bench(path: str | None = None) -> dict[str, dict[str, float]]:
  """AnalogNAS-Bench (``pip install analog-nasbench``, or ``.[bench]``) as a table.

  The package's ``data.anb`` is read without importing the package (its module imports
  pandas and pkg_resources): the file is located with ``importlib.util.find_spec`` and
  unpickled by an unpickler that maps the package's record classes to a plain record
  and refuses every other global. Accuracies are percentages, as in the file.
  """
  if path is None:
    spec = importlib.util.find_spec("analognasbench")
    if spec is None or not spec.submodule_search_locations:
      raise FileNotFoundError(
        "AnalogNAS-Bench is not installed: pip install analog-nasbench==0.1.3 (or "
        "pip install -e .[bench])"
      )
    path = str(Path(list(spec.submodule_search_locations)[0]) / "data.anb")

  class _Record:
    def __setstate__(self, state):
      self.__dict__.update(state)

  class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
      if module == "analognasbench.data" and name in ("Architecture", "DriftMeasurement"):
        return _Record
      raise pickle.UnpicklingError(f"{path}: refusing to load {module}.{name}")

  with open(path, "rb") as f:
    raw = _Unpickler(f).load()
  if not isinstance(raw, dict):
    raise ValueError(f"{path}: expected a dict of records, got {type(raw).__name__}")
  table = {}
  for key, rec in raw.items():
    table[analognas_key_to_string(tuple(key))] = {
      m: float(getattr(rec, m)) for m in ANALOGNAS_METRICS
    }
  return table


# --- zero-cost proxy --------------------------------------------------------------------


def naswot_score(model: nn.Module, variables: Any, images: jax.Array) -> float:
  """NASWOT (Mellor et al. 2021): log|K_H| of the batch's binary ReLU codes at init.

  Every BatchNorm output feeds a ReLU, so its sign pattern is the ReLU on/off code;
  ``K_H[i, j]`` counts the units where images i and j agree.
  """
  _, state = model.apply(
    variables,
    images,
    train=True,
    mutable=["batch_stats", "intermediates"],
    capture_intermediates=lambda mdl, _: isinstance(mdl, BatchNorm),
  )
  leaves = jax.tree_util.tree_leaves(state["intermediates"])
  n = images.shape[0]
  codes = jnp.concatenate([(leaf > 0).reshape(n, -1) for leaf in leaves], axis=1)
  codes = codes.astype(jnp.float32)
  k = codes @ codes.T + (1 - codes) @ (1 - codes).T
  sign, logdet = jnp.linalg.slogdet(
    k.astype(jnp.float64) if jax.config.x64_enabled else k
  )
  return float(logdet) if float(sign) > 0 else float("-inf")
