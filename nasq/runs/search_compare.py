"""Strategies compared on a real search: one search per (strategy, seed), paired by seed.

``compare_searches(config, workdir)`` is what ``experiments/benchmarks/search_strategies.py``
runs (configured by ``configs/compare_search.py``): the search ``config`` once per
strategy in
``config.compare_strategies`` and seed in ``config.compare_seeds``, into
``workdir/<strategy>/seed<k>``. Each is a ``run_search``, so a rerun resumes every one of
them. A seed's searches share their initial design: it is drawn from the seed alone, and
each candidate trains with seed + record index, so the initial records are the same for
every strategy, architecture and score. It is trained once, by the seed's first search,
and copied into the others' workdirs before they start (``share_initial_design``);
``summarize`` still refuses a comparison whose designs differ (workdirs filled
otherwise).

The table (``search_table.md``) gives, per seed and strategy, the best validation score,
the mean score of the initial design and of the strategy's own proposals, and how many
proposals came from a strategy's random fallback.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import ml_collections

from nasq import strategies as strategies_lib
from nasq.history import EVALUATED, History, attribution
from nasq.runs import search
from nasq.runs.config import user_errors

DEFAULT_STRATEGIES = ("latent_bo", "token_bo", "random", "evolution")
DEFAULT_SEEDS = (0, 1, 2)


def add_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A search config with the comparison's fields (strategies and seeds) added."""
  config.compare_strategies = DEFAULT_STRATEGIES
  config.compare_seeds = DEFAULT_SEEDS
  return config


def _search_config(config: ml_collections.ConfigDict, strategy: str, seed: int):
  c = config.copy_and_resolve_references()
  with c.unlocked():
    del c.compare_strategies
    del c.compare_seeds
  c.strategy = strategy
  c.seed = int(seed)
  return c


def summarize(
  histories: dict[tuple[str, int], History], num_initial: int
) -> dict[str, Any]:
  """Per (strategy, seed): best score, initial and proposal means, fallbacks; and per
  seed, whether the strategies' initial designs agree (they must)."""
  rows = {}
  for (strategy, seed), history in histories.items():
    ok = history.successful()
    initial = [r for r in ok if r.source == "initial"]
    proposed = [r for r in ok if r.source != "initial"]
    fallbacks = [r for r in history.evaluated() if r.source.endswith("/random")]
    best = history.best()
    rows[f"{strategy}/seed{seed}"] = {
      "strategy": strategy,
      "seed": seed,
      "evaluated": history.num_evaluated(),
      "best": best.objective if best else None,
      "best_source": best.source if best else None,
      "initial_mean": statistics.fmean(r.objective for r in initial) if initial else None,
      "initial_best": max((r.objective for r in initial), default=None),
      "proposals": len(proposed),
      "proposal_mean": (
        statistics.fmean(r.objective for r in proposed) if proposed else None
      ),
      "fallbacks": len(fallbacks),
      "failed": history.num_evaluated() - len(ok),
      "origins": attribution(history),
    }
  for seed in sorted({s for _, s in histories}):
    designs = {
      strategy: [(r.tokens, r.objective) for r in h.evaluated() if r.source == "initial"]
      for (strategy, s), h in histories.items()
      if s == seed
    }
    complete = {k: v for k, v in designs.items() if len(v) == num_initial}
    if len({json.dumps(v) for v in complete.values()}) > 1:
      raise ValueError(
        f"seed {seed}: the strategies' initial designs differ ({sorted(complete)}); "
        f"the comparison is not paired"
      )
  return rows


def _fmt(x: float | None) -> str:
  return "-" if x is None else f"{x:.4f}"


def table(rows: dict[str, Any], strategies: tuple[str, ...], seeds: tuple[int, ...]):
  """Markdown: one line per (seed, strategy), then per strategy the paired counts."""
  lines = [
    "| seed | strategy | best | best from | initial mean | proposals | proposal mean |"
    " fallbacks |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for seed in seeds:
    for strategy in strategies:
      r = rows.get(f"{strategy}/seed{seed}")
      if r is None:
        continue
      lines.append(
        f"| {seed} | {strategy} | {_fmt(r['best'])} | {r['best_source']} | "
        f"{_fmt(r['initial_mean'])} | {r['proposals']} | {_fmt(r['proposal_mean'])} | "
        f"{r['fallbacks']} |"
      )
  lines.append("")
  first = strategies[0]
  for other in strategies[1:]:
    pairs = [
      (rows[f"{first}/seed{s}"]["best"], rows[f"{other}/seed{s}"]["best"])
      for s in seeds
      if f"{first}/seed{s}" in rows and f"{other}/seed{s}" in rows
    ]
    wins = sum(a >= b for a, b in pairs if a is not None and b is not None)
    lines.append(f"* {first} best >= {other} best in {wins} of {len(pairs)} seeds.")
  own = [rows[k] for k in rows if rows[k]["strategy"] == first]
  above = sum(
    r["proposal_mean"] is not None and r["proposal_mean"] >= r["initial_mean"]
    for r in own
  )
  lines.append(
    f"* {first}'s proposal mean >= its initial design's mean in {above} of {len(own)} "
    "seeds."
  )
  lines += ["", *origins_table(rows, strategies)]
  return "\n".join(lines) + "\n"


def origins_table(rows: dict[str, Any], strategies: tuple[str, ...]) -> list[str]:
  """Markdown: per strategy and origin of its proposals (``history.attribution``),
  summed over the seeds: proposals, improvements of the best so far, their shares."""
  lines = [
    "| strategy | origin | proposals | share | improvements | share of improvements |",
    "|---|---|---|---|---|---|",
  ]
  for strategy in strategies:
    sums: dict[str, list[int]] = {}
    for r in rows.values():
      if r["strategy"] == strategy:
        for name, o in r.get("origins", {}).items():
          acc = sums.setdefault(name, [0, 0])
          acc[0] += o["proposals"]
          acc[1] += o["improvements"]
    total = sum(v[0] for v in sums.values()) or 1
    gains = sum(v[1] for v in sums.values()) or 1
    for name, (n, k) in sums.items():
      lines.append(
        f"| {strategy} | {name} | {n} | {n / total:.0%} | {k} | {k / gains:.0%} |"
      )
  return lines


def share_initial_design(source: Path, target: Path, num_initial: int) -> bool:
  """Copies ``source``'s initial design (its history's records before the first
  proposal, ``num_initial`` evaluations among them) into ``target``, a workdir not begun
  yet, so a seed's design is trained once for all strategies. The records are those the
  target's search would compute (the design and each candidate's training seed depend on
  the seed alone); the target's search then resumes after them. Returns whether it
  copied."""
  if (target / History.FILENAME).exists() or not (source / History.FILENAME).exists():
    return False
  records = History.open(source).records
  design = []
  for r in records:
    if r.source != "initial":
      break
    design.append(r)
  if sum(r.status in EVALUATED for r in design) < num_initial:
    return False  # the source's design is not finished
  history = History.open(target)
  for r in design:
    history.append(r)
  return True


def compare_searches(config: ml_collections.ConfigDict, workdir: str | Path):
  """Runs (or resumes) every (strategy, seed) search, then writes the table."""
  workdir = Path(workdir)
  strategies = tuple(config.compare_strategies)
  seeds = tuple(int(s) for s in config.compare_seeds)
  with user_errors():
    known = list(strategies_lib.STRATEGIES)
    if not strategies or any(s not in known for s in strategies):
      raise ValueError(
        f"compare_strategies must be a non-empty tuple of {known}, got {strategies!r}"
      )
    if not seeds:
      raise ValueError(f"compare_seeds must name at least one seed, got {seeds!r}")
  histories = {}
  for seed in seeds:
    for strategy in strategies:
      sub = workdir / strategy / f"seed{seed}"
      start = time.perf_counter()
      for other in strategies:  # the seed's initial design, trained once
        if share_initial_design(workdir / other / f"seed{seed}", sub, config.num_initial):
          print(f"=== the initial design of seed {seed} copied from {other}", flush=True)
          break
      print(f"=== {strategy}, seed {seed} -> {sub}", flush=True)
      search.run_search(_search_config(config, strategy, seed), sub)
      histories[(strategy, seed)] = History.open(sub)
      best = histories[(strategy, seed)].best()
      print(
        f"=== {strategy}, seed {seed}: best {_fmt(best.objective if best else None)} "
        f"({(time.perf_counter() - start) / 60:.1f} min in this run)",
        flush=True,
      )
  rows = summarize(histories, config.num_initial)
  (workdir / "search_results.json").write_text(json.dumps(rows, indent=1))
  text = table(rows, strategies, seeds)
  (workdir / "search_table.md").write_text(text)
  return rows
