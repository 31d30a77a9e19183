r"""One constrained BO step, nasq (MAP and NUTS) against BoTorch, on the same data.

  pip install botorch==0.18.1          # with torch 2.13.0 (pip install -e .[bench])
  python experiments/benchmarks/bo_step.py                    # about 10 min, 2 cores
  python experiments/benchmarks/bo_step.py --sizes=50,100 --repeats=2   # a quick look

Problem: Branin with the disk constraint of Gardner et al. (2014),
``(x1 - 2.5)^2 + (x2 - 7.5)^2 <= 50``, minimized; embedded in ``--dim`` dimensions (the
default latent dimension) of the box [-4, 4]^d, the other dimensions irrelevant, as a
search in an autoencoder's latent space sees it. For each n, n points are drawn
uniformly; each method fits a GP to the objective and one to the constraint and
maximizes constrained expected improvement once:

* nasq_map: ``acquisition.constrained_bo_step`` as shipped (L-BFGS-B on the jitted
  log posterior, in float64, from the prior's centre; 512 raw candidates, 16 Adam
  ascents of 100 steps);
* nasq_adam: the same step with the batched Adam fit (4 restarts x 200 steps, float32)
  that latent BO's warm-started fits use;
* nasq_nuts: numpyro NUTS hyperparameters (``--nuts_warmup`` + ``--nuts_samples`` per
  GP, the acquisition averaged over 16 of them), only at n <= ``--nuts_max_n``;
* botorch: ``SingleTaskGP`` per output (its default Matern-5/2 ARD with dimension-scaled
  priors), ``fit_gpytorch_mll``, ``LogConstrainedExpectedImprovement``, ``optimize_acqf``
  with 16 restarts from 512 raw samples.

Paired draws: at each n, every method first runs once on a warm-up draw (compilation,
BoTorch's first-call costs; reported apart), then on the same ``--repeats`` draws.
Reported: median wall time of one step, the median over draws of BoTorch's time divided
by the method's (the paired speed ratio), the median true Branin value of the proposals
(the constrained optimum is 0.3979), the share feasible, and on how many draws the
method's proposal is at least as good as BoTorch's (feasible, and Branin no higher).
"""

from __future__ import annotations

import math
import multiprocessing
import platform
import statistics
import time

import jax
import numpy as np
from absl import app, flags

from nasq import acquisition
from nasq import autoencoder as ae_lib

_SIZES = flags.DEFINE_list("sizes", ["50", "100", "200", "400"], "Observation counts.")
_DIM = flags.DEFINE_integer("dim", ae_lib.AutoencoderConfig().latent_dim, "Dimension.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Paired data draws per size.")
_METHODS = flags.DEFINE_list(
  "methods", ["nasq_map", "nasq_adam", "nasq_nuts", "botorch"], "Methods."
)
_NUTS_MAX_N = flags.DEFINE_integer("nuts_max_n", 50, "NUTS runs only at n <= this.")
_NUTS_WARMUP = flags.DEFINE_integer("nuts_warmup", 100, "NUTS warm-up steps per GP.")
_NUTS_SAMPLES = flags.DEFINE_integer("nuts_samples", 100, "NUTS samples per GP.")

BOUND = 4.0
OPTIMUM = 0.397887


def branin(x1, x2):
  a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5.0 / math.pi
  r, s, t = 6.0, 10.0, 1.0 / (8 * math.pi)
  return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * np.cos(x1) + s


def to_branin(z):
  """[-4, 4] -> Branin's domain x1 in [-5, 10], x2 in [0, 15] (first two dims)."""
  u = (np.asarray(z)[..., :2] + BOUND) / (2 * BOUND)
  return -5 + 15 * u[..., 0], 15 * u[..., 1]


def problem(z):
  x1, x2 = to_branin(z)
  return branin(x1, x2), (x1 - 2.5) ** 2 + (x2 - 7.5) ** 2 - 50.0  # feasible if <= 0


def nasq_step(x, f, c, seed, method):
  kwargs = {
    "nasq_map": {},
    "nasq_adam": {"map_optimizer": "adam"},
    "nasq_nuts": {
      "hyperparameters": "nuts",
      "nuts_warmup": _NUTS_WARMUP.value,
      "nuts_samples": _NUTS_SAMPLES.value,
    },
  }[method]
  z = acquisition.constrained_bo_step(
    x, -f, c[:, None], np.array([0.0]), jax.random.key(seed), **kwargs
  )
  return np.asarray(z)


def botorch_step(x, f, c, seed):
  import torch
  from botorch.acquisition.analytic import LogConstrainedExpectedImprovement
  from botorch.fit import fit_gpytorch_mll
  from botorch.models import ModelListGP, SingleTaskGP
  from botorch.optim import optimize_acqf
  from gpytorch.mlls import SumMarginalLogLikelihood

  torch.manual_seed(seed)
  d = x.shape[1]
  # BoTorch's models expect inputs in the unit cube.
  xt = torch.tensor((x + BOUND) / (2 * BOUND), dtype=torch.float64)
  from botorch.models.transforms import Standardize

  models = [
    SingleTaskGP(
      xt,
      torch.tensor(v, dtype=torch.float64)[:, None],
      outcome_transform=Standardize(m=1),
    )
    for v in (-f, c)
  ]
  model = ModelListGP(*models)
  fit_gpytorch_mll(SumMarginalLogLikelihood(model.likelihood, model))
  feasible = c <= 0
  best = float((-f)[feasible].max()) if feasible.any() else float((-f).min())
  acq = LogConstrainedExpectedImprovement(model, best, 0, {1: (None, 0.0)})
  bounds = torch.stack([torch.zeros(d), torch.ones(d)]).to(torch.float64)
  cand, _ = optimize_acqf(acq, bounds, q=1, num_restarts=16, raw_samples=512)
  return cand.numpy()[0] * 2 * BOUND - BOUND


def run_one(method, x, f, c, seed):
  start = time.perf_counter()
  if method == "botorch":
    z = botorch_step(x, f, c, seed)
  else:
    z = nasq_step(x, f, c, seed, method)
  seconds = time.perf_counter() - start
  fz, cz = problem(z)
  return seconds, float(fz), bool(cz <= 0)


def draw(n, d, rep):
  rng = np.random.default_rng(1000 * n + rep)
  x = rng.uniform(-BOUND, BOUND, (n, d))
  return (x, *problem(x))


def main(argv):
  del argv
  d = _DIM.value
  print(f"machine: {platform.machine()}, {multiprocessing.cpu_count()} CPUs; d={d}")
  rows = []
  for n in [int(s) for s in _SIZES.value]:
    methods = [m for m in _METHODS.value if m != "nasq_nuts" or n <= _NUTS_MAX_N.value]
    # Warm-up draw (its own seed), excluded from every method's figures.
    warm = {m: run_one(m, *draw(n, d, 999), 999)[0] for m in methods}
    results = {m: [] for m in methods}
    for rep in range(_REPEATS.value):
      data = draw(n, d, rep)
      for m in methods:
        results[m].append(run_one(m, *data, rep))
    for m in methods:
      times = [r[0] for r in results[m]]
      row = {
        "n": n,
        "method": m,
        "median_s": statistics.median(times),
        "warmup_s": warm[m],
        "median_branin": statistics.median(r[1] for r in results[m]),
        "feasible": float(np.mean([r[2] for r in results[m]])),
      }
      if "botorch" in results:
        ref = results["botorch"]
        row["ratio"] = statistics.median(
          b[0] / r[0] for b, r in zip(ref, results[m], strict=True)
        )
        row["as_good"] = sum(
          r[2] and (r[1] <= b[1] or not b[2])
          for b, r in zip(ref, results[m], strict=True)
        )
      rows.append(row)
      print(
        f"n={n:4d} {m:10s} step {row['median_s']:7.2f} s (warm-up {warm[m]:.1f} s)"
        + (f", {row['ratio']:.2f}x BoTorch's speed" if "ratio" in row else "")
        + f"; proposal Branin {row['median_branin']:.3f} (optimum {OPTIMUM}), "
        f"feasible {row['feasible']:.0%}",
        flush=True,
      )
  reps = _REPEATS.value
  print(f"\n{reps} paired draws per n (medians); warm-up draw excluded from all methods")
  print(
    "\n| n | method | step (s) | BoTorch time / method time | proposal Branin | "
    "feasible | as good as BoTorch's | warm-up (s) |"
  )
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
    good = f"{r['as_good']}/{reps}" if "as_good" in r else "-"
    print(
      f"| {r['n']} | {r['method']} | {r['median_s']:.2f} | {ratio} | "
      f"{r['median_branin']:.3f} | {r['feasible']:.0%} | {good} | {r['warmup_s']:.1f} |"
    )


if __name__ == "__main__":
  app.run(main)
