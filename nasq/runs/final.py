"""After the search: retrain the best candidates, and a hand-designed reference with the
same recipe, on train+validation; report test accuracy. Both resumable.

The delivered network and the reference may be retrained with several seeds (the search
config's ``final_seeds``), so the difference between them can be read against the
seeds' spread; the other finalists are retrained once beside them. The first retraining
uses the candidate's own seed (the reference's: the search's), the k-th further one that
seed + k * ``SEED_STRIDE``. The delivered checkpoint is the first retraining's; the
reported test accuracy is the mean over every retraining that succeeded, each listed.
Raising ``final_seeds`` on a finished search trains only the missing seeds."""

from __future__ import annotations

import collections
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
from nasq.history import STATUS_OK, History, Record
from nasq.quant import QuantConfig
from nasq.runs import record
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


class FinalEvaluator:
  """The final recipe's evaluator (``train_config`` with ``final=True``, on
  ``data_config``), its data loaded on first use: a resumed run with nothing left to
  train loads nothing, and one instance serves the finalists and the reference."""

  def __init__(self, quant, data_config, train_config, dataset=None):
    self.quant, self.data_config = quant, data_config
    self.train_config = dataclasses.replace(train_config, final=True)
    self.dataset, self._evaluate = dataset, None

  def __call__(self, arch, seed: int, keep_variables: bool = False):
    if self._evaluate is None:
      if self.dataset is None:
        self.dataset = data_lib.load_dataset(self.data_config)
      self._evaluate = evaluators.QATEvaluator(
        self.dataset, self.train_config, self.quant
      )
    return self._evaluate(arch, seed, keep_variables)


def retrain_finalists(
  workdir: Path,
  history: History,
  space: SearchSpace,
  budget: Budget,
  quant: QuantConfig,
  data_config: data_lib.DataConfig,
  train_config: train_lib.TrainConfig,
  *,
  num_final: int,
  reference: str,
  seed: int,
  num_seeds: int = 1,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
  """``retrain_best`` and, if ``reference`` names one, ``retrain_reference``, seed by
  seed (each call trains only what is missing): a run stopped part way leaves whole
  seeds of the finalists and the reference. Returns (finalists, reference or None)."""
  finals, entry = [], None
  evaluate = FinalEvaluator(quant, data_config, train_config)  # data loaded once
  args = (workdir, history, space, budget, quant, data_config, train_config)
  for n in range(1, num_seeds + 1):
    finals = retrain_best(*args, num_final, n, evaluate=evaluate)
    if reference:
      entry = retrain_reference(
        workdir,
        reference,
        space,
        budget,
        quant,
        data_config,
        train_config,
        seed,
        n,
        evaluate=evaluate,
      )
  return finals, entry


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
  evaluate: FinalEvaluator | None = None,
) -> list[dict[str, Any]]:
  """Retrains the ``num_final`` best feasible architectures on train+validation with
  ``train_config`` and reports their test accuracy; the delivered one is retrained
  ``num_seeds`` times in all (its test accuracy the mean, ``test_accuracies`` each), the
  others once beside it. Resumable via ``final.jsonl`` (one line per retraining; every
  candidate's first retraining before the delivered one's further seeds); a later
  call (a rerun, or ``retrain_finalists``' pass for the next seed) tries a failed
  retraining again, once (``MAX_ATTEMPTS`` tries in all).

  The delivered model (``best_checkpoint``, ``best_architecture.txt``) is chosen by
  the search's validation score, never by test accuracy: the highest-ranked candidate
  (``promotion.ranked_for_retraining``: highest fidelity first, then objective) whose
  first retraining succeeded. Its mean test accuracy is the final figure; the other
  candidates' are reported beside it, not used to choose.
  """
  chosen = promotion_lib.ranked_for_retraining(history, budget)[:num_final]
  path = workdir / "final.jsonl"
  finished, pending = _read_retrainings(path)
  evaluate = evaluate or FinalEvaluator(quant, data_config, train_config)
  retrain = _Retrainer(workdir, space, quant, evaluate)
  for rank, r in enumerate(chosen, 1):
    if pending((r.index, 0)):
      # Delivered: the best-ranked candidate whose first retraining succeeded (a
      # retried one that now succeeds takes the place of a lower-ranked one).
      deliver = _delivered(chosen[: rank - 1], finished) is None
      finished[(r.index, 0)] = retrain(r, 0, rank, deliver=deliver)
  best = _delivered(chosen, finished)
  for k in range(1, num_seeds if best is not None else 0):
    if pending((best.index, k)):
      rank = chosen.index(best) + 1
      finished[(best.index, k)] = retrain(best, k, rank, deliver=False)
  return [
    _candidate_summary(r, finished) | {"delivered": r is best}
    for r in chosen
    if (r.index, 0) in finished
  ]


# A retraining that failed (out of memory, a killed worker) is tried again by the next
# call, once: this many lines of one (record, replicate) in all.
MAX_ATTEMPTS = 2


def _finished(path: Path) -> dict[tuple[int, int], dict[str, Any]]:
  """The retrainings a JSON-lines file holds, by (record index, replicate), each its
  last line; a cut last line (a killed writer's) is dropped and reruns
  (``record.read``). Lines written before replicates existed are replicate 0, at the
  record's seed."""
  return _read_retrainings(path)[0]


def _read_retrainings(path: Path):
  """(``_finished``, ``pending``) from one read of ``path``: ``pending(key)`` says
  whether a (record index, replicate) is still to train, never tried or failed on
  fewer than ``MAX_ATTEMPTS`` tries (``_retry``)."""
  lines = record.read(path)
  key = lambda d: (d["index"], d.get("replicate", 0))
  finished = {key(d): d for d in lines}
  tries = collections.Counter(key(d) for d in lines)

  def pending(k: tuple[int, int]) -> bool:
    return k not in finished or _retry(finished[k]["status"], tries[k])

  return finished, pending


def _retry(status: str, tries: int) -> bool:
  """Whether a retraining whose last of ``tries`` ended with ``status`` trains again."""
  return status != STATUS_OK and tries < MAX_ATTEMPTS


RETRAINED = "retrained.jsonl"


def best_within(
  history: History, budget: Budget, max_size_bits: float, count: int = 1
) -> list[Record]:
  """The ``count`` best records (``promotion.ranked_for_retraining``: highest fidelity
  first, then objective) whose stored weights take at most ``max_size_bits``."""
  ranked = promotion_lib.ranked_for_retraining(history, budget)
  return [r for r in ranked if r.costs["model_size_bits"] <= max_size_bits][:count]


def retrain_records(
  workdir: Path,
  records: list[Record],
  space: SearchSpace,
  quant: QuantConfig,
  evaluate: FinalEvaluator,
  num_seeds: int = 1,
) -> list[dict[str, Any]]:
  """Retrains chosen records of a finished search (e.g. a front member below some size)
  with the final recipe, ``num_seeds`` times each at the finalists' seeds, so they
  compare with the finalists and the reference. Lines go to ``retrained.jsonl``, never
  to ``final.jsonl``, so what the search delivered is unchanged; a rerun trains only
  the missing (record, seed) pairs. Returns one summary per record (mean and seeds)."""
  finished, pending = _read_retrainings(workdir / RETRAINED)
  retrain = _Retrainer(workdir, space, quant, evaluate, RETRAINED)
  for rank, r in enumerate(records, 1):
    for k in range(max(int(num_seeds), 1)):
      if pending((r.index, k)):
        finished[(r.index, k)] = retrain(r, k, rank, deliver=False)
  return [_candidate_summary(r, finished) for r in records]


def read_finals(workdir: Path, history: History) -> list[dict[str, Any]]:
  """The search's retrained finalists as ``retrain_best`` returned them, from
  ``final.jsonl`` (in rank order), without training anything."""
  finished = _finished(workdir / "final.jsonl")
  firsts = sorted(
    (d for (_, k), d in finished.items() if k == 0), key=lambda d: d["rank"]
  )
  chosen = [history.records[d["index"]] for d in firsts]
  best = _delivered(chosen, finished)
  return [_candidate_summary(r, finished) | {"delivered": r is best} for r in chosen]


def _delivered(chosen, finished):
  """The first chosen candidate whose first retraining succeeded, or None."""
  ok = lambda r: finished.get((r.index, 0), {}).get("status") == STATUS_OK  # noqa: E731
  return next((r for r in chosen if ok(r)), None)


def _candidate_summary(r, finished: dict) -> dict[str, Any]:
  """A candidate's first retraining's line, its test accuracy the mean over its
  retrainings (``seconds``: all of them)."""
  entries = [finished[(i, k)] for i, k in sorted(finished) if i == r.index]
  replicates = [
    {
      "seed": e.get("seed", replicate_seed(r.seed, e.get("replicate", 0))),
      "test_accuracy": e["test_accuracy"],
    }
    for e in entries
  ]
  first = {k: v for k, v in entries[0].items() if k not in ("replicate", "seed")}
  return first | {"seconds": sum(e["seconds"] for e in entries)} | _aggregate(replicates)


class _Retrainer:
  """Retrains one candidate (one seed) and appends its line to ``name`` (``final.jsonl``
  or ``retrained.jsonl``); the delivered one's first retraining also saves
  ``best_checkpoint``."""

  def __init__(self, workdir, space, quant, evaluate: FinalEvaluator, name="final.jsonl"):
    self.workdir, self.space, self.quant, self.evaluate = workdir, space, quant, evaluate
    self.path = workdir / name

  def __call__(self, r, replicate: int, rank: int, deliver: bool) -> dict[str, Any]:
    seed = replicate_seed(r.seed, replicate)
    print(
      f"retraining #{r.index} {r.arch} on train+validation "
      f"({self.evaluate.train_config.epochs} epochs, seed {seed})"
    )
    arch = self.space.decode(r.tokens)
    result = self.evaluate(arch, seed, replicate == 0)
    entry = {
      "index": r.index,
      "replicate": replicate,
      "seed": seed,
      "rank": rank,
      "arch": r.arch,
      "search_objective": r.objective,
      "fidelity": r.fidelity,
      "status": result.status,
      "test_accuracy": result.metrics.get("test_accuracy"),
      "seconds": result.seconds,
      "costs": r.costs,
      "delivered": deliver and result.status == STATUS_OK,
    }
    if entry["delivered"]:
      checkpoints.save_checkpoint(
        str(self.workdir / "best_checkpoint"),
        result.variables,
        checkpoints.model_meta(arch, self.quant, self.evaluate.dataset)
        | {"selected_by": "search validation score (rank 1 of the retrained)"},
      )
      (self.workdir / "best_architecture.txt").write_text(r.arch + "\n")
    record.append(self.path, entry)  # removes a killed writer's cut line first
    return entry


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
  evaluate: FinalEvaluator | None = None,
) -> dict[str, Any]:
  """Trains ``reference`` (a ``REFERENCE_NETWORKS`` name or a macro string) with the
  final recipe, as the search's best were, ``num_seeds`` times (seeds
  ``replicate_seed(seed, k)``); ``reference.json`` keeps the result, rewritten whole
  after each replicate, and a rerun trains only the missing ones, and a failed one
  again (``MAX_ATTEMPTS`` tries in all)."""
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
  evaluate = evaluate or FinalEvaluator(quant, data_config, train_config)
  num_seeds = max(int(num_seeds), 1)
  for k in range(num_seeds):
    old = replicates[k] if k < len(replicates) else None
    tries = old.get("attempts", 1) if old else 0
    if old and not _retry(old["status"], tries):
      continue  # done, or failed on its last allowed try
    s = replicate_seed(seed, k)
    print(
      f"retraining the reference {arch.to_string()} ({train_config.epochs} epochs, "
      f"seed {s}{', again after a failure' if old else ''})"
    )
    result = evaluate(arch, s)
    entry = {
      "seed": s,
      "status": result.status,
      "test_accuracy": result.metrics.get("test_accuracy"),
      "seconds": result.seconds + (old["seconds"] if old else 0.0),
      "attempts": tries + 1,
    }
    replicates[k : k + 1] = [entry]
    _write_reference(path, reference, arch, c, budget, replicates)
  return _reference_entry(reference, arch, c, budget, replicates)


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
