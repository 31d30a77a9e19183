r"""How well cheap training signals rank architectures: the Fashion-MNIST fidelity table.

  python experiments/benchmarks/fidelity.py                     # resumable; hours on CPU
  python experiments/benchmarks/fidelity.py --report_only       # statistics of the table

Architectures: ``--num_random`` drawn depth-uniformly from the default search's space
(configs/default.py) that fit its budgets, plus the hand-designed reference network
and a few hand-written ones. Each is scored by every signal in ``--fidelities``:

* ``naswot``: the NASWOT zero-cost proxy at initialization (one batch of 128 training
  images), no training;
* ``<epochs>x<images>``: 4-bit QAT for that many epochs on the first ``images`` of the
  training split (validation carved as the search does), validation accuracy: what a
  search sees;
* ``ref``: the reference fidelity, near converged for ranking: ``--ref_epochs`` epochs on
  all 60,000 training images (train + validation) with the search's final-training
  recipe (``final_train``), test accuracy: what the user gets.

One row per (architecture, signal, seed) is appended to ``--out`` as soon as it is
measured, so an interrupted run resumes where it stopped, and work is ordered
architecture by architecture (every signal of one before the next), so a partial table
already pairs each signal with the reference. The report gives, per signal, Spearman's
rank correlation with the reference and the overlap of the top 5, over the
architectures measured at both, and the median seconds per candidate.
"""

from __future__ import annotations

import csv
import dataclasses
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from scipy import stats

from nasq import costs, data, evaluators, models, train
from nasq.quant import QuantConfig
from nasq.runs.config import from_config, space_from_config
from nasq.runs.settings import resolve_data_sections
from nasq.spaces import make_space

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _archs import architectures  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/default.py", "The search whose space, budgets and recipes are used."
)
_OUT = flags.DEFINE_string(
  "out", "experiments/benchmarks/data/fmnist_fidelity.csv", "The table (appended to)."
)
_NUM_RANDOM = flags.DEFINE_integer("num_random", 30, "Random feasible architectures.")
_FIDELITIES = flags.DEFINE_list(
  "fidelities",
  ["naswot", "1x6000", "3x12000", "1x50000", "ref"],
  "Signals: naswot, <epochs>x<training images>, ref.",
)
_REF_EPOCHS = flags.DEFINE_integer("ref_epochs", 10, "Epochs of the reference fidelity.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Training seeds (one row each).")
_SAMPLE_SEED = flags.DEFINE_integer("sample_seed", 0, "Architecture sampling seed.")
_HAND_WRITTEN = flags.DEFINE_bool(
  "hand_written", True, "Add the hand-written networks (the reference always)."
)
_MAX_HOURS = flags.DEFINE_float("max_hours", 0.0, "Stop after this long (0: never).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only print the statistics.")

COLUMNS = (
  "arch",
  "origin",
  "fidelity",
  "seed",
  "score",
  "metric",
  "seconds",
  "status",
  "params",
  "macs",
  "model_size_bits",
  "peak_activation_bytes",
  "commit",
)


def read_table(path: Path) -> list[dict[str, str]]:
  if not path.exists():
    return []
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def append_row(path: Path, row: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  new = not path.exists()
  with open(path, "a", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    if new:
      writer.writeheader()
    writer.writerow(row)
    f.flush()


def parse_fidelity(name: str) -> tuple[int, int]:
  try:
    epochs, images = (int(v) for v in name.split("x"))
  except ValueError:
    raise ValueError(
      f"fidelities: {name!r} is not 'naswot', 'ref' or '<epochs>x<images>'"
    ) from None
  return epochs, images


def measure(arch, fidelity, seed, settings, datasets) -> tuple[float, str, float, str]:
  """(score, metric, seconds, status) of one signal."""
  quant, train_config, final_config = settings
  start = time.perf_counter()
  if fidelity == "naswot":
    model = models.build_model(arch, quant.weight_bits)
    variables = models.init_variables(
      model, tuple(arch.input_shape), jax.random.key(seed)
    )
    ds = datasets["search"]
    images = train.normalize(
      ds.train.images[:128], mean=np.asarray(ds.mean), std=np.asarray(ds.std)
    )
    score = evaluators.naswot_score(model, variables, images)
    return score, "naswot", time.perf_counter() - start, "ok"
  if fidelity == "ref":
    config = dataclasses.replace(
      final_config, epochs=_REF_EPOCHS.value, seed=seed, progress=False, final=True
    )
    result = train.train_and_evaluate(arch, quant, datasets["final"], config)
    score, metric = result.test_accuracy, "test_accuracy"
  else:
    epochs, images = parse_fidelity(fidelity)
    ds = datasets["search"]
    subset = dataclasses.replace(
      ds, train=data.Split(ds.train.images[:images], ds.train.labels[:images])
    )
    config = dataclasses.replace(train_config, epochs=epochs, seed=seed, progress=False)
    result = train.train_and_evaluate(arch, quant, subset, config)
    score, metric = result.val_accuracy, "val_accuracy"
  seconds = time.perf_counter() - start
  if result.status != "ok" or score is None:
    reason = result.failure_reason or f"no {metric}"
    return float("nan"), metric, seconds, f"failed: {reason}"
  return float(score), metric, seconds, "ok"


def code_commit() -> str:
  """The commit of the code measuring (``-dirty`` if nasq/ differs from it)."""
  import subprocess

  root = Path(__file__).resolve().parents[2]

  def git(*args):
    out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    return out.stdout.strip()

  commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
  return commit + ("-dirty" if git("status", "--porcelain", "--", "nasq") else "")


def report(rows: list[dict[str, str]]) -> None:
  """Spearman, Kendall and top-5 overlap of each signal against ``ref`` (seed-
  averaged), over every architecture measured at both and over the top quarter by
  ``ref``, with the median seconds per candidate."""
  scores: dict[str, dict[str, list[float]]] = {}
  seconds: dict[str, list[float]] = {}
  for r in rows:
    if r["status"] != "ok":
      continue
    scores.setdefault(r["fidelity"], {}).setdefault(r["arch"], []).append(
      float(r["score"])
    )
    seconds.setdefault(r["fidelity"], []).append(float(r["seconds"]))
  mean = {f: {a: float(np.mean(v)) for a, v in s.items()} for f, s in scores.items()}
  archs = {r["arch"] for r in rows}
  failed = sum(r["status"] != "ok" for r in rows)
  print(
    f"\n{len(rows)} rows, {len(archs)} architectures, {failed} failed; "
    f"{len(mean.get('ref', {}))} measured at the reference fidelity"
  )
  print(
    "\n| signal | architectures with ref | Spearman vs ref | Kendall vs ref | "
    "Spearman, top quarter by ref | top-5 overlap | median s / candidate |"
  )
  print("|---|---|---|---|---|---|---|")
  ref = mean.get("ref", {})
  for fidelity, values in mean.items():
    common = sorted(set(values) & set(ref))
    med = statistics.median(seconds[fidelity])
    rho = tau = top_rho = overlap = ""
    if fidelity != "ref" and len(common) >= 3:
      x = [values[a] for a in common]
      y = [ref[a] for a in common]
      rho = f"{stats.spearmanr(x, y).statistic:.2f}"
      tau = f"{stats.kendalltau(x, y).statistic:.2f}"
      top = sorted(common, key=lambda a: -ref[a])[: max(3, len(common) // 4)]
      top_rho = f"{stats.spearmanr([values[a] for a in top], [ref[a] for a in top]).statistic:.2f} ({len(top)})"
      k = min(5, len(common))
      top_x = set(sorted(common, key=lambda a: -values[a])[:k])
      top_y = set(sorted(common, key=lambda a: -ref[a])[:k])
      overlap = f"{len(top_x & top_y)}/{k}"
    print(
      f"| {fidelity} | {len(common)} | {rho} | {tau} | {top_rho} | {overlap} | "
      f"{med:.1f} |"
    )


def main(argv):
  del argv
  config = _CONFIG.value
  out = Path(_OUT.value)
  if _REPORT_ONLY.value:
    report(read_table(out))
    return
  for f in _FIDELITIES.value:
    if f not in ("naswot", "ref"):
      parse_fidelity(f)
  space = make_space(space_from_config(config.space))
  budget = from_config(costs.Budget, config.budget, "budget")
  quant = QuantConfig(config.weight_bits, config.activation_bits)
  train_config = from_config(train.TrainConfig, config.train, "train")
  final_config = from_config(train.TrainConfig, config.final_train, "final_train")
  search_data = from_config(data.DataConfig, config.data, "data")
  final_data = from_config(
    data.DataConfig, resolve_data_sections(config).final_data, "final_data"
  )
  datasets = {
    # every training image the fidelities may use: subsets are taken per fidelity
    "search": data.load_dataset(dataclasses.replace(search_data, train_size=0)),
    "final": data.load_dataset(final_data),
  }
  archs = architectures(
    space,
    budget,
    config.weight_bits,
    _NUM_RANDOM.value,
    _SAMPLE_SEED.value,
    _HAND_WRITTEN.value,
  )
  done = {(r["arch"], r["fidelity"], r["seed"]) for r in read_table(out)}
  print(
    f"machine: {platform.machine()}, {multiprocessing.cpu_count()} CPUs; "
    f"{len(archs)} architectures x {len(_FIDELITIES.value)} signals x "
    f"{len(_SEEDS.value)} seeds; {len(done)} rows already in {out}",
    flush=True,
  )
  deadline = time.time() + 3600 * _MAX_HOURS.value if _MAX_HOURS.value else None
  settings = (quant, train_config, final_config)
  commit = code_commit()
  for i, (origin, arch) in enumerate(archs):
    text = arch.to_string()
    c = costs.compute_costs(arch, config.weight_bits, config.activation_bits).summary()
    for fidelity in _FIDELITIES.value:
      for seed in _SEEDS.value:
        if (text, fidelity, seed) in done:
          continue
        if deadline is not None and time.time() > deadline:
          print("time limit reached; rerun to continue")
          report(read_table(out))
          return
        score, metric, seconds, status = measure(
          arch, fidelity, int(seed), settings, datasets
        )
        append_row(
          out,
          {
            "arch": text,
            "origin": origin,
            "fidelity": fidelity,
            "seed": seed,
            "score": f"{score:.6g}",
            "metric": metric,
            "seconds": f"{seconds:.1f}",
            "status": status,
            **{k: c[k] for k in costs.BUDGET_FIELDS if k in c},
            "commit": commit,
          },
        )
        print(
          f"[{i + 1}/{len(archs)}] {fidelity:>8} seed {seed}: {metric} {score:.4f} "
          f"({seconds:.0f} s, {status}) {text}",
          flush=True,
        )
  report(read_table(out))


if __name__ == "__main__":
  app.run(main)
