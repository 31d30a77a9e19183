"""After the search: retrain the best candidates, and a hand-designed reference with the
same recipe, on train+validation; report test accuracy. Both resumable."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from nasq import checkpoints, evaluators
from nasq import costs as costs_lib
from nasq import data as data_lib
from nasq import promotion as promotion_lib
from nasq import train as train_lib
from nasq.costs import Budget
from nasq.history import STATUS_OK, History
from nasq.quant import QuantConfig
from nasq.spaces import SearchSpace, macro


def retrain_best(
  workdir: Path,
  history: History,
  space: SearchSpace,
  budget: Budget,
  quant: QuantConfig,
  data_config: data_lib.DataConfig,
  train_config: train_lib.TrainConfig,
  num_final: int,
) -> list[dict[str, Any]]:
  """Retrains the ``num_final`` best feasible architectures on train+validation with
  ``train_config`` and reports their test accuracy. Resumable via ``final.jsonl``.

  The delivered model (``best_checkpoint``, ``best_architecture.txt``) is chosen by
  the search's validation score, never by test accuracy: the highest-ranked candidate
  (``promotion.ranked_for_retraining``: highest fidelity first, then objective) whose
  retraining succeeded. Its test accuracy is the final figure; the other candidates'
  test accuracies are reported beside it, not used to choose.
  """
  path = workdir / "final.jsonl"
  done = []
  if path.exists():
    for line in path.read_text().splitlines():
      if line.strip():
        try:
          done.append(json.loads(line))
        except json.JSONDecodeError:
          break  # a torn last line: that retraining reruns
  chosen = promotion_lib.ranked_for_retraining(history, budget)[:num_final]
  finished = {d["index"]: d for d in done}
  if all(r.index in finished for r in chosen):
    return [finished[r.index] for r in chosen]
  train_config = dataclasses.replace(train_config, final=True)
  dataset = data_lib.load_dataset(data_config)
  evaluate = evaluators.QATEvaluator(dataset, train_config, quant)
  # The model already delivered: the first chosen candidate that retrained.
  delivered = next(
    (r.index for r in chosen if finished.get(r.index, {}).get("status") == STATUS_OK),
    None,
  )
  for rank, r in enumerate(chosen, 1):
    if r.index in finished:
      continue
    print(
      f"retraining #{r.index} {r.arch} on train+validation ({train_config.epochs} epochs)"
    )
    result = evaluate(space.decode(r.tokens), r.seed, True)
    entry = {
      "index": r.index,
      "rank": rank,
      "arch": r.arch,
      "search_objective": r.objective,
      "fidelity": r.fidelity,
      "status": result.status,
      "test_accuracy": result.metrics.get("test_accuracy"),
      "seconds": result.seconds,
      "costs": r.costs,
      "delivered": False,
    }
    if result.status == STATUS_OK and delivered is None:
      delivered = r.index
      entry["delivered"] = True
      arch = space.decode(r.tokens)
      checkpoints.save_checkpoint(
        str(workdir / "best_checkpoint"),
        result.variables,
        checkpoints.model_meta(arch, quant, dataset)
        | {"selected_by": "search validation score (rank 1 of the retrained)"},
      )
      (workdir / "best_architecture.txt").write_text(r.arch + "\n")
    with open(path, "a") as f:
      f.write(json.dumps(entry) + "\n")
      f.flush()
    finished[r.index] = entry
  return [finished[r.index] for r in chosen if r.index in finished]


def resolve_reference(reference: str, space: SearchSpace) -> macro.MacroArchitecture:
  """The network ``reference`` names, for the images of ``space``; errors name the
  field."""
  try:
    if reference in macro.REFERENCE_NETWORKS:
      arch = macro.reference_architecture(reference)
    else:
      shape, classes = space.input_shape, space.num_classes
      arch = macro.space_for_string(reference, shape, classes).parse(reference)
  except ValueError as e:
    raise ValueError(
      f"reference must be one of {sorted(macro.REFERENCE_NETWORKS)} or a macro "
      f"string such as 'conv3:s1:c16 maxpool:s2'; {e}"
    ) from None
  if tuple(arch.input_shape) != tuple(space.input_shape):
    raise ValueError(
      f"reference {reference!r} takes {tuple(arch.input_shape)} images; the search's "
      f"space takes {tuple(space.input_shape)}"
    )
  return arch


def retrain_reference(
  workdir: Path,
  reference: str,
  space: SearchSpace,
  budget: Budget,
  quant: QuantConfig,
  data_config: data_lib.DataConfig,
  train_config: train_lib.TrainConfig,
  seed: int,
) -> dict[str, Any]:
  """Trains ``reference`` (a ``REFERENCE_NETWORKS`` name or a macro string) with the
  final recipe, as the search's best were; ``reference.json`` keeps the result."""
  arch = resolve_reference(reference, space)
  path = workdir / "reference.json"
  if path.exists():
    entry = json.loads(path.read_text())
    if entry.get("arch") == arch.to_string():
      return entry
  print(f"retraining the reference {arch.to_string()} ({train_config.epochs} epochs)")
  config = dataclasses.replace(train_config, final=True)
  evaluate = evaluators.QATEvaluator(data_lib.load_dataset(data_config), config, quant)
  result = evaluate(arch, seed)
  c = costs_lib.compute_costs(arch, quant.weight_bits, quant.activation_bits).summary()
  entry = {
    "name": reference,
    "arch": arch.to_string(),
    "status": result.status,
    "test_accuracy": result.metrics.get("test_accuracy"),
    "seconds": result.seconds,
    "costs": c,
    "fits_budget": budget.fits(c),
  }
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(entry, indent=1))
  tmp.replace(path)  # whole or absent: a killed run retrains, never reads half a file
  return entry
