"""Retraining chosen records of a finished search with its final recipe: a member of
the Pareto front below some size, say, beside the finalists and the reference that
the search itself retrained (``nasq.runs.final.retrain_records``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_collections

from nasq import data as data_lib
from nasq.history import STATUS_OK, History, Record
from nasq.runs import final, search
from nasq.runs import settings as settings_lib
from nasq.runs import workdir as workdir_lib
from nasq.runs.config import user_errors
from nasq.spaces import make_space


def open_finished(
  config: ml_collections.ConfigDict, workdir: str | Path
) -> tuple[settings_lib.SearchSettings, History]:
  """The settings and the history of the finished search in ``workdir``. ``config``
  must be the search's own: checked against ``workdir/config.json`` (``ValueError``
  naming the field that differs), so whatever is trained again uses its recipe."""
  workdir = Path(workdir)
  config = settings_lib.resolve_data_sections(config)
  if not (workdir / History.FILENAME).exists():
    raise ValueError(f"workdir: {workdir} holds no search ({History.FILENAME} missing)")
  if not workdir_lib.check_config(workdir, config, search.default_config()):
    raise ValueError(f"workdir: {workdir} has no config.json to check the recipe against")
  return settings_lib.SearchSettings.from_config(config), History.open(workdir)


def successful_records(
  history: History, indices, fidelity: int | None = None
) -> list[Record]:
  """The records at ``indices`` of ``history``; ``ValueError`` (field ``records``) for
  an index that is not a successful record (of fidelity ``fidelity``, when given)."""
  try:
    indices = [int(i) for i in indices]
  except ValueError:
    raise ValueError(f"records: integers, got {list(indices)}") from None
  if not indices:
    raise ValueError("records: give at least one record index")
  what = "record" if fidelity is None else f"search evaluation (fidelity {fidelity})"
  chosen = []
  for i in indices:
    r = history.records[i] if 0 <= i < len(history) else None
    if r is None or r.status != STATUS_OK or fidelity not in (None, r.fidelity):
      raise ValueError(
        f"records: {i} is not a successful {what} of {history.path.parent} "
        f"(indices 0-{len(history) - 1})"
      )
    chosen.append(r)
  return chosen


def retrain_chosen(
  config: ml_collections.ConfigDict,
  workdir: str | Path,
  *,
  records: tuple[int, ...] = (),
  within_kb: float = 0.0,
  count: int = 1,
  num_seeds: int = 0,
) -> dict[str, Any]:
  """Retrains the records ``records`` (indices in the search's history) or, with
  ``within_kb``, the ``count`` best records whose weights take at most that many KB
  (1 KB = 1024 bytes), each ``num_seeds`` times (0: the search's ``final_seeds``).

  ``config`` must be the search's own (checked against ``workdir/config.json``), so
  the recipe (``final_train``, ``final_data``, quantization) is the one its finalists
  and reference were retrained with. Returns {"retrained": one summary per record,
  "finals": the search's final.jsonl summaries, "reference": reference.json or None}.
  """
  with user_errors():  # bad input fails here, before anything is trained
    if bool(records) == bool(within_kb):
      raise ValueError("give either records (indices) or within_kb (> 0), not both")
    workdir = Path(workdir)
    settings, history = open_finished(config, workdir)
    if within_kb:
      chosen = final.best_within(history, settings.budget, within_kb * 8 * 1024, count)
      if not chosen:
        raise ValueError(f"within_kb: no successful record takes <= {within_kb} KB")
    else:
      chosen = successful_records(history, records)
    seeds = int(num_seeds) or int(config.final_seeds)
    dataset = data_lib.load_dataset(settings.final_data)
    # The space as the search's: it takes the data's image shape and classes.
    space = make_space(settings_lib.for_dataset(settings, dataset).space)
    evaluate = final.FinalEvaluator(
      settings.quantization, settings.final_data, settings.final_train, dataset
    )
  retrained = final.retrain_records(
    workdir, chosen, space, settings.quantization, evaluate, seeds
  )
  reference = None
  if (workdir / "reference.json").exists():
    reference = json.loads((workdir / "reference.json").read_text())
  return {
    "retrained": retrained,
    "finals": final.read_finals(workdir, history),
    "reference": reference,
  }
