"""The end-to-end search: autoencoder, initial design, strategy loop, retraining, report.

``run_search(config, workdir)`` is what ``experiments/search.py`` runs. Everything goes to
the workdir, and a rerun with the same workdir resumes: evaluations already in
``history.jsonl`` are not repeated, retrained models already in ``final.jsonl`` are not
retrained.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections

from nasq import autoencoder as ae_lib
from nasq import data as data_lib
from nasq import evaluators, executors, report, strategies
from nasq.history import (
  STATUS_DUPLICATE,
  STATUS_INFEASIBLE,
  STATUS_OK,
  History,
  Record,
)
from nasq.quant import QuantConfig, check_bits
from nasq.spaces import make_space

logger = logging.getLogger(__name__)


class ConfigMismatchError(ValueError):
  """The workdir holds a search run with another configuration."""


def run_strategy(
  ctx: strategies.SearchContext,
  strategy: Any,
  evaluate: Callable[[Any, int], evaluators.Evaluation] | None,
  objective: ml_collections.ConfigDict,
  num_evaluations: int,
  key: jax.Array,
  *,
  label: str | None = None,
  count_all: bool = True,
  seed: int = 0,
  on_record: Callable[[Record], None] | None = None,
  max_rejections: int = 100,
  executor: Any = None,
) -> None:
  """Runs ``strategy`` until the history holds ``num_evaluations`` evaluations: all of
  them with ``count_all``, else those recorded under ``label`` (the source written in
  each record; the strategy's name by default).

  Each proposal is decoded and costed exactly before anything else: an architecture over
  budget is recorded ``infeasible``, one evaluated before ``duplicate`` (naming the
  earlier record); neither is trained. A distinct rejected architecture is recorded
  once. After ``max_rejections`` rejections in a row, proposals come from random
  search so the run cannot stall.

  Evaluations run on ``executor`` (``nasq.executors``; by default ``evaluate`` in this
  process, one at a time). It keeps ``executor.num_workers`` in flight: the strategy
  proposes for each free worker while the others run (``ctx.pending`` holds their
  architectures, so nothing is proposed twice), and each result is written to the
  history as it arrives. A candidate's training seed is ``seed`` plus the index it
  would have in submission order.
  """

  if executor is None:
    executor = executors.LocalExecutor(evaluate)
  loop = _Loop(
    ctx,
    strategy,
    executor,
    objective,
    label or strategy.name,
    key,
    seed,
    on_record,
    max_rejections,
    rejected={
      r.tokens for r in ctx.history if r.status in (STATUS_INFEASIBLE, STATUS_DUPLICATE)
    },
  )
  count = lambda: ctx.history.num_evaluated(None if count_all else loop.source)  # noqa: E731
  ctx.pending = []
  try:
    while True:
      while len(loop.pending) < executor.num_workers and (
        count() + len(loop.pending) < num_evaluations
      ):
        loop.submit_next()
      if not loop.pending:
        return
      for handle, result in executor.wait_any(list(loop.pending)):
        loop.record_result(handle, result)
  finally:
    ctx.pending = []


@dataclasses.dataclass
class _Loop:
  """The state of one ``run_strategy`` call."""

  ctx: strategies.SearchContext
  strategy: Any
  executor: Any
  objective: ml_collections.ConfigDict
  source: str
  key: jax.Array
  seed: int
  on_record: Callable[[Record], None] | None
  max_rejections: int = 100
  misses: int = 0  # rejections in a row
  rejected: set[tuple[int, ...]] = dataclasses.field(default_factory=set)
  pending: dict[Any, dict[str, Any]] = dataclasses.field(default_factory=dict)
  fallback: Any = dataclasses.field(default_factory=strategies.RandomSearch)

  def _publish_pending(self) -> None:
    """What strategies see as being evaluated: derived from the tasks in flight."""
    self.ctx.pending = [c["tokens"] for c in self.pending.values()]

  def _append(self, **fields) -> None:
    record = self.ctx.history.append(Record(index=self.ctx.history.next_index, **fields))
    if self.on_record:
      self.on_record(record)

  def submit_next(self) -> None:
    """Proposes until one architecture is submitted, recording the rejected ones."""
    ctx = self.ctx
    while True:
      step_key = jax.random.fold_in(self.key, ctx.history.next_index)
      if self.pending:
        step_key = jax.random.fold_in(step_key, len(self.pending))
      use = self.strategy if self.misses < self.max_rejections else self.fallback
      proposals = use.propose(ctx, step_key)
      if not proposals:
        raise RuntimeError(
          f"{use.name} found no new architecture that fits the budget {ctx.budget}"
        )
      for proposal in proposals:
        tokens = proposal.tokens
        if tokens in ctx.pending:
          self.misses += 1
          continue
        arch = ctx.space.decode(tokens)
        costs = ctx.costs(tokens)
        common = dict(
          source=self.source if use is self.strategy else f"{self.source}/random",
          arch=arch.to_string(),
          tokens=tokens,
          costs=costs,
          latent=proposal.latent,
        )
        earlier = ctx.history.evaluated_index(tokens)
        if earlier is not None or not ctx.budget.fits(costs):
          self.misses += 1
          if tokens not in self.rejected:
            self.rejected.add(tokens)
            self._append(
              status=STATUS_DUPLICATE if earlier is not None else STATUS_INFEASIBLE,
              duplicate_of=earlier,
              reason="; ".join(ctx.budget.violations(costs)) if earlier is None else "",
              **common,
            )
          continue
        common["seed"] = self.seed + ctx.history.next_index + len(self.pending)
        self.pending[self.executor.submit(arch, common["seed"])] = common
        self._publish_pending()
        self.misses = 0
        return

  def record_result(self, handle: Any, result: evaluators.Evaluation) -> None:
    common = self.pending.pop(handle)
    self._publish_pending()
    value = (
      evaluators.objective_value(self.objective, result.metrics, common["costs"])
      if result.status == STATUS_OK
      else None
    )
    status, reason = result.status, result.reason
    if status == STATUS_OK and value is None:
      status, reason = "failed", f"objective metric {self.objective.metric} missing"
    self._append(
      status=status,
      objective=value,
      metrics=result.metrics,
      seconds=result.seconds,
      reason=reason,
      **common,
    )


def _check_workdir_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
  path = workdir / "config.json"
  current = json.loads(config.to_json_best_effort(sort_keys=True))
  if path.exists():
    saved = json.loads(path.read_text())
    # Presentation and execution settings may change between runs (resume a search
    # begun on one machine with more workers, or on a cluster).
    ignore = ("progress", "executor")
    a = {k: v for k, v in saved.items() if k not in ignore}
    b = {k: v for k, v in current.items() if k not in ignore}
    if a != b:
      changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
      raise ConfigMismatchError(
        f"{workdir} holds a search with another configuration (fields {changed} differ); "
        f"use a new --workdir, or the same config to resume"
      )
  else:
    path.write_text(json.dumps(current, indent=1, sort_keys=True))


def validate_config(config: ml_collections.ConfigDict) -> None:
  check_bits(config.weight_bits)
  if config.strategy not in strategies.STRATEGIES:
    raise ValueError(
      f"strategy must be one of {list(strategies.STRATEGIES)}, got {config.strategy!r}"
    )
  if config.num_initial < 1 or config.num_evaluations < config.num_initial:
    raise ValueError(
      f"need 1 <= num_initial <= num_evaluations, got num_initial={config.num_initial}, "
      f"num_evaluations={config.num_evaluations}"
    )
  if config.num_final < 0:
    raise ValueError(f"num_final must be >= 0, got {config.num_final}")
  executors.validate_config(config.executor)
  if config.objective.kind not in evaluators.OBJECTIVES:
    raise ValueError(
      f"objective.kind must be one of {list(evaluators.OBJECTIVES)}, got "
      f"{config.objective.kind!r}"
    )


def run_search(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Runs (or resumes) the configured search; returns the report's summary."""
  from tensorboardX import SummaryWriter
  from tqdm.auto import tqdm

  validate_config(config)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  _check_workdir_config(workdir, config)
  budget = strategies.Budget.from_config(config.budget)
  space = make_space(config.space)
  quant = QuantConfig(config.weight_bits, config.activation_bits)
  history = History.open(workdir)
  if len(history):
    print(f"resuming: {history.num_evaluated()} evaluations already in {history.path}")

  ae = None
  if config.strategy == "latent_bo":
    ae = ae_lib.load_or_train(
      config.space, config.autoencoder, config.cache_dir, progress=config.progress
    )
  dataset = data_lib.load_dataset(config.data)
  if (tuple(dataset.input_shape), dataset.num_classes) != (
    tuple(space.input_shape),
    space.num_classes,
  ):
    raise ValueError(
      f"space.input_shape/num_classes {tuple(space.input_shape)}/{space.num_classes} do "
      f"not match dataset {config.data.name!r}: {tuple(dataset.input_shape)}/"
      f"{dataset.num_classes}"
    )
  writer = SummaryWriter(str(workdir / "tensorboard"))
  curve_step = {"n": 0}

  def on_epoch(arch, epoch, metrics):
    curve_step["n"] += 1
    for k, v in metrics.items():
      if k != "epoch" and v is not None:
        writer.add_scalar(f"candidate/{k}", v, curve_step["n"])

  evaluate = evaluators.QATEvaluator(dataset, config.train, quant, on_epoch=on_epoch)
  # Ray workers build their own evaluator (loading the dataset there); per-epoch
  # TensorBoard curves are written for local evaluations only.
  executor = executors.make_executor(
    config.executor,
    evaluate=evaluate,
    factory=functools.partial(
      evaluators.build_qat_evaluator, config.data, config.train, quant
    ),
  )
  ctx = strategies.SearchContext(
    space, budget, config.weight_bits, config.activation_bits, history, ae
  )
  bar = tqdm(
    total=config.num_evaluations,
    initial=history.num_evaluated(),
    desc=f"search ({config.strategy})",
    unit="eval",
    disable=not config.progress,
    dynamic_ncols=True,
  )

  def on_record(record: Record) -> None:
    if record.status in (STATUS_INFEASIBLE, STATUS_DUPLICATE):
      writer.add_scalar("search/rejected", 1, record.index)
      return
    bar.update(1)
    n = history.num_evaluated()
    best = history.best()
    if record.objective is not None:
      writer.add_scalar("search/objective", record.objective, n)
    if best is not None:
      writer.add_scalar("search/best_objective", best.objective, n)
      bar.set_postfix(
        best=f"{best.objective:.4f}", last=f"{record.objective or float('nan'):.4f}"
      )
    writer.add_scalar("search/model_size_kb", record.costs["model_size_bits"] / 8000, n)
    writer.flush()

  key = jax.random.key(config.seed)
  start = time.perf_counter()
  initial = strategies.RandomSearch(config.strategies)
  strategy = strategies.make_strategy(config.strategy, config.strategies, ae)
  try:
    run_strategy(
      ctx,
      initial,
      evaluate,
      config.objective,
      config.num_initial,
      jax.random.fold_in(key, 1),
      label="initial",
      count_all=False,
      seed=config.seed,
      on_record=on_record,
      executor=executor,
    )
    run_strategy(
      ctx,
      strategy,
      evaluate,
      config.objective,
      config.num_evaluations,
      jax.random.fold_in(key, 2),
      seed=config.seed,
      on_record=on_record,
      executor=executor,
    )
  finally:
    executor.close()
  bar.close()
  search_seconds = time.perf_counter() - start

  finals = retrain_best(config, workdir, history, budget, quant)
  summary = report.write_report(
    workdir, history, finals, budget, config, search_seconds=search_seconds
  )
  writer.close()
  return summary


def retrain_best(
  config: ml_collections.ConfigDict,
  workdir: Path,
  history: History,
  budget: strategies.Budget,
  quant: QuantConfig,
) -> list[dict[str, Any]]:
  """Retrains the ``num_final`` best feasible architectures on train+validation with the
  longer schedule; reports test accuracy; checkpoints the best. Resumable via
  ``final.jsonl``."""
  from nasq import run

  path = workdir / "final.jsonl"
  done = []
  if path.exists():
    for line in path.read_text().splitlines():
      if line.strip():
        try:
          done.append(json.loads(line))
        except json.JSONDecodeError:
          break  # a torn last line: that retraining reruns
  ok = [r for r in history.successful() if budget.fits(r.costs)]
  ok.sort(key=lambda r: r.objective, reverse=True)
  chosen = ok[: config.num_final]
  finished = {d["index"] for d in done}
  if all(r.index in finished for r in chosen):
    return [d for d in done if d["index"] in {r.index for r in chosen}]
  train_config = config.final_train.copy_and_resolve_references()
  train_config.final = True
  dataset = data_lib.load_dataset(config.final_data)
  evaluate = evaluators.QATEvaluator(dataset, train_config, quant)
  best_test = max((d["test_accuracy"] or -1 for d in done), default=-1.0)
  for r in chosen:
    if r.index in finished:
      continue
    print(
      f"retraining #{r.index} {r.arch} on train+validation ({train_config.epochs} epochs)"
    )
    result = evaluate(_decode(config, r), r.seed, True)
    entry = {
      "index": r.index,
      "arch": r.arch,
      "search_objective": r.objective,
      "status": result.status,
      "test_accuracy": result.metrics.get("test_accuracy"),
      "seconds": result.seconds,
      "costs": r.costs,
    }
    if result.status == STATUS_OK and (entry["test_accuracy"] or -1) > best_test:
      best_test = entry["test_accuracy"]
      run.save_checkpoint(str(workdir / "best_checkpoint"), result.variables)
      (workdir / "best_architecture.txt").write_text(r.arch + "\n")
    with open(path, "a") as f:
      f.write(json.dumps(entry) + "\n")
      f.flush()
    done.append(entry)
  return [d for d in done if d["index"] in {r.index for r in chosen}]


def run_sweep(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[int, Any]:
  """One search per bit width in ``config.sweep_weight_bits``, then the combined
  accuracy-vs-size front (``workdir/fronts_by_bits.png``)."""
  workdir = Path(workdir)
  summaries, histories = {}, {}
  for bits in config.sweep_weight_bits:
    sub = config.copy_and_resolve_references()
    sub.weight_bits = int(bits)
    sub.sweep_weight_bits = ()
    print(f"=== {bits}-bit weights ===")
    summaries[int(bits)] = run_search(sub, workdir / f"bits{bits}")
    histories[int(bits)] = History.open(workdir / f"bits{bits}")
  report.plot_bit_width_fronts(
    histories,
    strategies.Budget.from_config(config.budget),
    workdir / "fronts_by_bits.png",
  )
  return summaries


def _decode(config: ml_collections.ConfigDict, record: Record) -> Any:
  return make_space(config.space).decode(record.tokens)


def default_config() -> ml_collections.ConfigDict:
  """Every field a search reads (configs/default.py overrides a few)."""
  from nasq import spaces
  from nasq import train as train_lib

  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds proposals and each candidate's training (seed + record index).
  c.strategy = "latent_bo"  # latent_bo, random or evolution.
  c.num_initial = 10  # Feasible random architectures evaluated first (every strategy).
  c.num_evaluations = 40  # Total trained candidates, initial design included.
  c.num_final = 2  # Best feasible candidates retrained with final_train.
  c.weight_bits = 4  # Weight bit width of every candidate (2..8, or 32).
  c.activation_bits = 8  # Activation bits for the peak-memory cost.
  c.space = spaces.default_config("macro")
  c.budget = ml_collections.ConfigDict()
  c.budget.model_size_bits = 64 * 8 * 1024  # Stored weights (64 KB), or None.
  c.budget.macs = 30e6  # Multiply-accumulates per image, or None.
  c.budget.peak_activation_bytes = None  # Peak activation memory (bytes), or None.
  c.budget.params = None  # Parameter count, or None.
  c.objective = evaluators.default_objective_config()
  c.strategies = strategies.default_config()
  c.autoencoder = ae_lib.default_config()
  c.cache_dir = "~/.cache/nasq/autoencoders"  # Trained autoencoders, keyed by config.
  c.data = data_lib.default_config()
  c.train = train_lib.default_config()  # Each candidate's (short) schedule.
  c.final_data = data_lib.default_config()  # Data of the retraining (train+val, test).
  c.final_train = train_lib.default_config()  # The retraining schedule.
  # Weight bit widths for a sweep (one search each, into workdir/bits<b>), or () for
  # one search at weight_bits.
  c.sweep_weight_bits = ()
  c.executor = executors.default_config()  # Where evaluations run (nasq/executors.py).
  c.progress = True  # Progress bars.
  return c


__all__ = ["ConfigMismatchError", "default_config", "run_search", "run_strategy"]
