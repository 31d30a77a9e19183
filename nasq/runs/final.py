"""After the search: retrain the best candidates, and a hand-designed reference with the
same recipe, on train+validation; report test accuracy. Both resumable.

Each network may be retrained with several seeds (``num_seeds``, the search config's
``final_seeds``), so a difference between a found network and the reference can be read
against the seeds' spread: replicate 0 trains with the candidate's own seed (the
reference's: the search's), replicate k with that seed + k * ``SEED_STRIDE``. The
delivered checkpoint is always replicate 0's; the reported test accuracy is the mean
over the replicates that trained, each listed beside it. Raising ``final_seeds`` on a
finished search trains only the missing replicates."""

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

SEED_STRIDE = 1_000_003  # Apart from every record's seed + index in a search.


def replicate_seed(seed: int, replicate: int) -> int:
  """The training seed of a network's ``replicate``-th retraining."""
  return int(seed) + int(replicate) * SEED_STRIDE


def _aggregate(replicates: list[dict[str, Any]]) -> dict[str, Any]:
  """Mean and spread of the replicates' test accuracies (failed ones listed as None and
  left out of the mean)."""
  accs = [r["test_accuracy"] for r in replicates]
  ok = [a for a in accs if a is not None]
  mean = sum(ok) / len(ok) if ok else None
  std = (sum((a - mean) ** 2 for a in ok) / (len(ok) - 1)) ** 0.5 if len(ok) > 1 else None
  return {
    "test_accuracy": mean,
    "test_accuracy_std": std,
    "test_accuracies": accs,
    "seeds": [r["seed"] for r in replicates],
  }


def retrain_best(
  workdir: Path,
  history: History,
  space: SearchSpace,
  budget: Budget,
  quant: QuantConfig,
  data_config: data_lib.DataConfig,
  train_config: train_lib.TrainConfig,
  num_final: int,
  num_seeds: int = 1,
) -> list[dict[str, Any]]:
  """Retrains the ``num_final`` best feasible architectures on train+validation with
  ``train_config``, ``num_seeds`` times each, and reports their test accuracy (the mean
  over seeds; ``test_accuracies`` lists each). Resumable via ``final.jsonl`` (one line per
  retraining; replicate 0 of every candidate first).

  The delivered model (``best_checkpoint``, ``best_architecture.txt``) is chosen by
  the search's validation score, never by test accuracy: the highest-ranked candidate
  (``promotion.ranked_for_retraining``: highest fidelity first, then objective) whose
  retraining (replicate 0) succeeded. Its mean test accuracy is the final figure; the
  other candidates' are reported beside it, not used to choose.
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
  # Lines written before replicates existed are replicate 0, at the record's seed.
  finished = {(d["index"], d.get("replicate", 0)): d for d in done}
  wanted = [(k, r) for k in range(num_seeds) for r in chosen]
  if any((r.index, k) not in finished for k, r in wanted):
    _retrain_missing(
      workdir, path, space, quant, data_config, train_config, chosen, wanted, finished
    )
  return [
    _candidate_summary(r, finished, num_seeds) for r in chosen if (r.index, 0) in finished
  ]


def _candidate_summary(r, finished: dict, num_seeds: int) -> dict[str, Any]:
  """A candidate's replicate-0 line, its test accuracy the mean over its replicates
  (``seconds``: all of its retrainings)."""
  entries = [finished[(r.index, k)] for k in range(num_seeds) if (r.index, k) in finished]
  replicates = [
    {
      "seed": e.get("seed", replicate_seed(r.seed, e.get("replicate", 0))),
      "test_accuracy": e["test_accuracy"],
    }
    for e in entries
  ]
  first = {k: v for k, v in entries[0].items() if k not in ("replicate", "seed")}
  return first | {"seconds": sum(e["seconds"] for e in entries)} | _aggregate(replicates)


def _retrain_missing(
  workdir, path, space, quant, data_config, train_config, chosen, wanted, finished
) -> None:
  train_config = dataclasses.replace(train_config, final=True)
  dataset = data_lib.load_dataset(data_config)
  evaluate = evaluators.QATEvaluator(dataset, train_config, quant)
  # The model already delivered: the first chosen candidate whose replicate 0 retrained.
  delivered = next(
    (
      r.index for r in chosen if finished.get((r.index, 0), {}).get("status") == STATUS_OK
    ),
    None,
  )
  rank_of = {r.index: rank for rank, r in enumerate(chosen, 1)}
  for k, r in wanted:
    if (r.index, k) in finished:
      continue
    if k > 0 and (r.index, 0) not in finished:
      continue  # replicate 0 comes first (it may be the delivered model)
    seed = replicate_seed(r.seed, k)
    print(
      f"retraining #{r.index} {r.arch} on train+validation ({train_config.epochs} "
      f"epochs, seed {seed})"
    )
    result = evaluate(space.decode(r.tokens), seed, k == 0)
    entry = {
      "index": r.index,
      "replicate": k,
      "seed": seed,
      "rank": rank_of[r.index],
      "arch": r.arch,
      "search_objective": r.objective,
      "fidelity": r.fidelity,
      "status": result.status,
      "test_accuracy": result.metrics.get("test_accuracy"),
      "seconds": result.seconds,
      "costs": r.costs,
      "delivered": False,
    }
    if k == 0 and result.status == STATUS_OK and delivered is None:
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
    finished[(r.index, k)] = entry


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
  num_seeds: int = 1,
) -> dict[str, Any]:
  """Trains ``reference`` (a ``REFERENCE_NETWORKS`` name or a macro string) with the
  final recipe, as the search's best were, ``num_seeds`` times (seeds
  ``replicate_seed(seed, k)``); ``reference.json`` keeps the result, rewritten whole
  after each replicate, and a rerun trains only the missing ones."""
  arch = resolve_reference(reference, space)
  path = workdir / "reference.json"
  replicates = []
  if path.exists():
    entry = json.loads(path.read_text())
    if entry.get("arch") == arch.to_string():
      # A file written before replicates existed holds replicate 0.
      replicates = entry.get("replicates") or [
        {k: entry[k] for k in ("status", "test_accuracy", "seconds")} | {"seed": seed}
      ]
  c = costs_lib.compute_costs(arch, quant.weight_bits, quant.activation_bits).summary()
  config = dataclasses.replace(train_config, final=True)
  evaluate = None
  num_seeds = max(int(num_seeds), 1)
  while len(replicates) < num_seeds:
    if evaluate is None:
      dataset = data_lib.load_dataset(data_config)
      evaluate = evaluators.QATEvaluator(dataset, config, quant)
    k = len(replicates)
    s = replicate_seed(seed, k)
    print(
      f"retraining the reference {arch.to_string()} ({train_config.epochs} epochs, "
      f"seed {s})"
    )
    result = evaluate(arch, s)
    replicates.append(
      {
        "seed": s,
        "status": result.status,
        "test_accuracy": result.metrics.get("test_accuracy"),
        "seconds": result.seconds,
      }
    )
    _write_reference(path, reference, arch, c, budget, replicates)
  return _reference_entry(reference, arch, c, budget, replicates[:num_seeds])


def _reference_entry(reference, arch, costs, budget, replicates) -> dict[str, Any]:
  ok = [r for r in replicates if r["status"] == STATUS_OK]
  return {
    "name": reference,
    "arch": arch.to_string(),
    "status": STATUS_OK if ok else replicates[0]["status"],
    "seconds": sum(r["seconds"] for r in replicates),
    "costs": costs,
    "fits_budget": budget.fits(costs),
    "replicates": replicates,
  } | _aggregate(replicates)


def _write_reference(path, reference, arch, costs, budget, replicates) -> None:
  entry = _reference_entry(reference, arch, costs, budget, replicates)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(entry, indent=1))
  tmp.replace(path)  # whole or absent: a killed run retrains, never reads half a file
