"""The end-to-end search: autoencoder, initial design, strategy loop, retraining, report.

``run_search(config, workdir)`` is what ``experiments/search.py`` runs (configured by
``configs/default.py``). Everything goes to
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
from pathlib import Path
from typing import Any

import jax
import ml_collections
from tensorboardX import SummaryWriter
from tqdm.auto import tqdm

from nasq import autoencoder as ae_lib
from nasq import data as data_lib
from nasq import evaluators, executors, report, strategies
from nasq import promotion as promotion_lib
from nasq import train as train_lib
from nasq.costs import Budget
from nasq.export import ExportError
from nasq.feasibility import check_budget
from nasq.history import STATUS_DUPLICATE, STATUS_INFEASIBLE, History, Record
from nasq.loop import run_strategy
from nasq.runs import export as export_run
from nasq.runs import final as final_lib
from nasq.runs import workdir as workdir_lib
from nasq.runs.config import (
  ConfigError,
  from_config,
  to_config,
  user_errors,
)
from nasq.runs.settings import (
  SearchSettings,
  check_one_test_split,
  for_dataset,
  other_final_data,
  resolve_data_sections,
)
from nasq.runs.workdir import ConfigMismatchError
from nasq.spaces import SearchSpace, make_space, space_config

logger = logging.getLogger(__name__)


def _check_dataset(space: SearchSpace, dataset: data_lib.Dataset) -> None:
  if (tuple(dataset.input_shape), dataset.num_classes) != (
    tuple(space.input_shape),
    space.num_classes,
  ):
    raise ValueError(
      f"space.input_shape/num_classes {tuple(space.input_shape)}/{space.num_classes} do "
      f"not match dataset {dataset.name!r}: {tuple(dataset.input_shape)}/"
      f"{dataset.num_classes}"
    )


def _check_schedules(
  settings: SearchSettings,
  dataset: data_lib.Dataset,
  final_dataset: data_lib.Dataset,
  num_final: int,
) -> None:
  """Each training schedule against the examples it will have: a batch larger than
  the training set, or a promotion rung asking for more images than there are, is an
  error naming the field, before any work."""
  train_lib.check_batch_fits(settings.train, len(dataset.train), "train", "data")
  for rung in settings.promotion.parsed:
    if rung.train_images > dataset.num_train_available:
      raise ValueError(
        f"promotion.rungs: rung {rung} asks for {rung.train_images} training images; "
        f"data {dataset.name!r} has {dataset.num_train_available} after carving "
        f"data.val_size={len(dataset.val)} (0 takes them all)"
      )
    images = rung.train_images or dataset.num_train_available
    train_lib.check_batch_fits(settings.train, images, "train", f"promotion rung {rung}")
  if num_final:
    examples = len(final_dataset.train) + len(final_dataset.val)
    train_lib.check_batch_fits(
      settings.final_train, examples, "final_train", "final_data"
    )


def run_search(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Runs (or resumes) the configured search; returns the report's summary.

  Everything the user must fix (a config field, a budget no architecture meets, a workdir
  holding another search, missing data, an unreachable cluster) is a ``ConfigError``
  raised before anything is trained, and before the workdir is touched where it can be.
  """
  with user_errors():
    config = resolve_data_sections(config)  # final_data follows data unless named
    settings = SearchSettings.from_config(config)
    if notice := other_final_data(settings):
      print(notice, flush=True)
    budget = settings.budget
    space = make_space(settings.space)
    given = _check_space(config, space, budget)  # refused before any work
    if config.export:
      _check_export(config, space)
    workdir = Path(workdir)
    resuming = workdir_lib.check_config(workdir, config, default_config())
    # Everything that can fail on the user's input fails here, before the workdir is
    # marked as this search's: the data and the schedules against it.
    dataset = data_lib.load_dataset(settings.data)
    if (adapted := for_dataset(settings, dataset)) is not settings:
      settings = adapted
      space = make_space(settings.space)
      given = _check_space(config, space, budget)
    final_dataset = (
      dataset
      if settings.final_data == settings.data
      else data_lib.load_dataset(settings.final_data)
    )
    _check_dataset(space, final_dataset)
    check_one_test_split(settings, dataset)
    _check_schedules(settings, dataset, final_dataset, config.num_final)
    workdir_lib.write_config(workdir, config)
    history = History.open(workdir)
  train_lib.use_compilation_cache(config.compilation_cache_dir)
  del final_dataset  # the retraining takes it from data_lib's cache of read files
  if resuming and len(history):
    print(f"resuming: {history.num_evaluated()} evaluations already in {history.path}")

  ae = None
  if config.strategy in strategies.LATENT_STRATEGIES:
    with user_errors():  # a cached autoencoder of another space or format
      ae = ae_lib.load_or_train(
        space, settings.autoencoder, config.cache_dir, progress=config.progress
      )
  writer = SummaryWriter(str(workdir / "tensorboard"))
  curve_step = {"n": 0}

  def on_epoch(arch, epoch, metrics):
    curve_step["n"] += 1
    for k, v in metrics.items():
      if k != "epoch" and v is not None:
        writer.add_scalar(f"candidate/{k}", v, curve_step["n"])

  evaluate = evaluators.QATEvaluator(
    dataset, settings.train, settings.quantization, on_epoch=on_epoch
  )
  # Ray workers build their own evaluator (loading the dataset there); per-epoch
  # TensorBoard curves are written for local evaluations only.
  with user_errors():
    executor = executors.make_executor(
      settings.executor,
      evaluate=evaluate,
      factory=functools.partial(
        evaluators.build_qat_evaluator,
        settings.data,
        settings.train,
        settings.quantization,
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
  initial = strategies.GivenFirst(
    given, strategies.RandomSearch(settings.strategies.random_batch)
  )
  strategy = strategies.make_strategy(config.strategy, settings.strategies, ae)
  try:
    run_strategy(
      ctx,
      initial,
      evaluate,
      settings.objective,
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
      settings.objective,
      config.num_evaluations,
      jax.random.fold_in(key, 2),
      seed=config.seed,
      on_record=on_record,
      executor=executor,
    )
  finally:
    executor.close()
  bar.close()
  _promote(settings, space, history, writer, config.progress)
  search_seconds = time.perf_counter() - start

  with user_errors():  # the reference (checked before any work) by name or string
    finals, reference = final_lib.retrain_finalists(
      workdir,
      history,
      space,
      budget,
      settings.quantization,
      settings.final_data,
      settings.final_train,
      num_final=config.num_final,
      reference=config.reference,
      seed=config.seed,
      num_seeds=int(config.final_seeds),
    )
  summary = report.write_report(
    workdir,
    history,
    finals,
    budget,
    strategy=config.strategy,
    weight_bits=config.weight_bits,
    num_initial=config.num_initial,
    objective_kind=settings.objective.kind,
    search_seconds=search_seconds,
    rung_names=[str(r) for r in settings.promotion.parsed],
    reference=reference,
    weight_bits_choices=getattr(space, "bits_choices", None) or (),
  )
  writer.close()
  if config.export:
    summary["export"] = _export(workdir)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    if "error" in summary["export"]:
      raise ConfigError(
        f"export failed: {summary['export']['error']} (the search's results stay in "
        f"{workdir}; rerun the export with experiments/export.py --workdir={workdir})"
      )
  return summary


def _check_export(config, space: SearchSpace) -> None:
  """``export=True`` refused before any work where it would fail after the search."""
  if config.num_final < 1:
    raise ValueError(
      "export=True exports the retrained best model: num_final must be >= 1 (got 0), "
      "or set export=False"
    )
  if not space.exportable:
    raise ValueError(
      f"export=True: networks of the {space.name!r} space cannot be exported (LiteRT "
      f"and ONNX export take the 'macro' space's CNNs); set export=False"
    )
  try:
    export_run.check_export_extra()
  except ImportError as e:
    raise ConfigError(str(e)) from None


def _check_space(config, space, budget) -> list[tuple[int, ...]]:
  """The checks that depend on the space: the reference, a budget some architecture
  meets, ``initial_architectures`` (returned as token vectors)."""
  if config.reference:
    final_lib.resolve_reference(config.reference, space)
  bits = (config.weight_bits, config.activation_bits)
  check_budget(space, budget, *bits, config.num_evaluations)
  return strategies.given_tokens(
    config.initial_architectures, space, budget, *bits, config.num_initial
  )


def _promote(
  settings: SearchSettings,
  space: SearchSpace,
  history: History,
  writer: SummaryWriter,
  progress: bool,
) -> None:
  """Successive halving over the search's candidates (``nasq.promotion``)."""
  rungs = settings.promotion.parsed
  if not rungs:
    return
  planned = promotion_lib.num_planned(len(history.successful()), settings.promotion)
  bar = tqdm(
    total=sum(planned),
    initial=sum(len(history.evaluated(k)) for k in range(1, len(rungs) + 1)),
    desc=f"promotion ({', '.join(map(str, rungs))})",
    unit="eval",
    disable=not progress,
    dynamic_ncols=True,
  )

  def make_executor(rung: promotion_lib.Rung) -> executors.Executor:
    data_config = dataclasses.replace(settings.data, train_size=rung.train_images)
    train_config = dataclasses.replace(settings.train, epochs=rung.epochs)
    return executors.make_executor(
      settings.executor,
      factory=functools.partial(
        evaluators.build_qat_evaluator,
        data_config,
        train_config,
        settings.quantization,
      ),
    )

  def on_record(record: Record) -> None:
    bar.update(1)
    if record.objective is not None:
      writer.add_scalar(
        f"promotion/rung{record.fidelity}", record.objective, record.index
      )
    best = history.best(record.fidelity)
    if best is not None:
      bar.set_postfix(rung=record.fidelity, best=f"{best.objective:.4f}")

  with user_errors():
    promotion_lib.run_promotions(
      history,
      space,
      settings.promotion,
      settings.objective,
      make_executor,
      on_record,
    )
  bar.close()


def _export(workdir: Path) -> dict[str, Any]:
  """Exports the best retrained model (``export.*`` files) and adds the export report to
  report.md; a model that cannot be exported is recorded (``{"error": ...}``) and the
  caller ends the run with that error, the search's results kept."""
  try:
    result = export_run.export_workdir(workdir)
  except (ExportError, ImportError, ValueError, FileNotFoundError) as e:
    return {"error": f"{type(e).__name__}: {e}"}
  out = Path(result["dir"])
  result["files"] = sorted(p.name for p in out.iterdir())
  body = (out / "export_report.md").read_text().split("\n", 1)[1]
  with open(workdir / "report.md", "a") as f:
    f.write(f"\n## Export (`{out.name}/`: {', '.join(result['files'])})\n{body}")
  return result


def run_sweep(
  config: ml_collections.ConfigDict, workdir: str | Path
) -> dict[int, dict[str, Any]]:
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
    from_config(Budget, config.budget, "budget"),
    workdir / "fronts_by_bits.png",
  )
  return summaries


def default_config() -> ml_collections.ConfigDict:
  """Every field a search reads (configs/default.py overrides a few)."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds proposals and each candidate's training (seed + record index).
  c.strategy = "token_bo"  # latent_bo, token_bo, lbq_nas, random or evolution.
  c.num_initial = 10  # Architectures evaluated first: the given ones, then random.
  # The initial design's first ones (REFERENCE_NETWORKS names or strings of the space).
  c.initial_architectures = ()
  c.num_evaluations = 40  # Total trained candidates, initial design included.
  c.num_final = 2  # Best feasible candidates retrained with final_train.
  # Seeds the delivered one and the reference are retrained with (the other finalists
  # once); their test accuracy is the mean. Raised on a finished search, only the
  # missing seeds train.
  c.final_seeds = 1
  # A hand-designed network retrained with final_train beside them, for comparison: a
  # name of nasq.spaces.macro.REFERENCE_NETWORKS or a macro string; "" = none.
  c.reference = ""
  c.weight_bits = 4  # Weight bit width of every candidate (2..8, or 32).
  c.activation_bits = 8  # Activation bits for the peak-memory cost.
  # Integer-faithful QAT: 8-bit activations with learned ranges, as the int8 export
  # computes them (nasq.quant.QuantConfig.integer_qat).
  c.integer_qat = False
  c.space = to_config(space_config("macro"))  # nasq.spaces.MacroSpaceConfig
  # Upper bounds (nasq.costs.Budget): model_size_bits (stored weights), macs (per
  # image), peak_activation_bytes, params; None = unbounded.
  c.budget = to_config(Budget(model_size_bits=64 * 8 * 1024, macs=30e6))
  c.objective = to_config(evaluators.Objective())  # nasq.evaluators.Objective
  c.strategies = to_config(strategies.StrategySettings())  # nasq.strategies
  c.autoencoder = to_config(ae_lib.AutoencoderConfig())
  c.cache_dir = "~/.cache/nasq/autoencoders"  # Trained autoencoders, keyed by config.
  # Compiled XLA programs kept across runs (resume, promotions, retraining); "" = off.
  c.compilation_cache_dir = "~/.cache/nasq/xla"
  c.data = to_config(data_lib.DataConfig())  # nasq.data.DataConfig
  c.train = to_config(train_lib.TrainConfig())  # Each candidate's (short) schedule.
  # Data of the retraining and the test figure: name "" = the search's data (the
  # fields of nasq.runs.settings.FOLLOWED follow `data`; train/test_size stay own).
  c.final_data = to_config(data_lib.DataConfig(name=""))
  c.final_train = to_config(train_lib.TrainConfig())  # The retraining schedule.
  # Weight bit widths for a sweep (one search each, into workdir/bits<b>), or () for
  # one search at weight_bits.
  c.sweep_weight_bits = ()
  c.executor = to_config(executors.ExecutorConfig())  # Where evaluations run.
  # Successive halving after the search (nasq.promotion.PromotionConfig): the best
  # candidates trained again at longer fidelities, rung by rung, before retraining.
  c.promotion = to_config(promotion_lib.PromotionConfig())
  c.progress = True  # Progress bars.
  # Export the best retrained model (int8 .tflite, its C array, .onnx, a report) into
  # workdir/export; needs the export extra (pip install -e .[export]).
  c.export = False
  return c


__all__ = [
  "ConfigMismatchError",
  "SearchSettings",
  "default_config",
  "run_search",
  "run_sweep",
]
