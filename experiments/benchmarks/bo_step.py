r"""One constrained BO step, nasq (MAP and NUTS) against BoTorch, on the same data.

  pip install botorch==0.18.1          # with torch 2.13.0 (pip install -e .[bench])
  python experiments/benchmarks/bo_step.py                    # about 15 min, 2 cores
  python experiments/benchmarks/bo_step.py --sizes=50,100 --repeats=1   # a quick look

Problem: Branin with the disk constraint of Gardner et al. (2014),
``(x1 - 2.5)^2 + (x2 - 7.5)^2 <= 50``, minimized; embedded in ``--dim`` dimensions (the
default latent dimension) of the box [-4, 4]^d, the other dimensions irrelevant, as a
search in an autoencoder's latent space sees it. For each n, n points are drawn
uniformly; each method fits a GP to the objective and one to the constraint and
maximizes constrained expected improvement once:

* nasq MAP: ``acquisition.constrained_bo_step`` (optax, 4 restarts x 200 steps; 512 raw
  candidates, 16 Adam ascents of 100 steps);
* nasq NUTS: the same with numpyro NUTS hyperparameters (200 warmup, 200 samples, the
  acquisition averaged over 16 of them);
* BoTorch: ``SingleTaskGP`` per output (its default Matern-5/2 ARD with dimension-scaled
  priors), ``fit_gpytorch_mll``, ``LogConstrainedExpectedImprovement``, ``optimize_acqf``
  with 16 restarts from 512 raw samples.

Reported: warm wall time of one step (median over repeats; nasq's first call, which
compiles, is reported apart), and the quality of each proposal: its true Branin value and
whether it is feasible (the constrained optimum is 0.3979).
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
_REPEATS = flags.DEFINE_integer("repeats", 3, "Data draws per size.")
_METHODS = flags.DEFINE_list("methods", ["nasq_map", "nasq_nuts", "botorch"], "Methods.")

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


def nasq_step(x, f, c, seed, hyper):
  z = acquisition.constrained_bo_step(
    x, -f, c[:, None], np.array([0.0]), jax.random.key(seed), hyperparameters=hyper
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


def main(argv):
  del argv
  d = _DIM.value
  print(f"machine: {platform.machine()}, {multiprocessing.cpu_count()} CPUs; d={d}")
  rows = []
  for n in [int(s) for s in _SIZES.value]:
    for method in _METHODS.value:
      times, values, feas, first = [], [], [], None
      for rep in range(_REPEATS.value + (0 if method == "botorch" else 1)):
        rng = np.random.default_rng(1000 * n + rep)
        x = rng.uniform(-BOUND, BOUND, (n, d))
        f, c = problem(x)
        start = time.perf_counter()
        if method == "botorch":
          z = botorch_step(x, f, c, rep)
        else:
          z = nasq_step(x, f, c, rep, "map" if method == "nasq_map" else "nuts")
        seconds = time.perf_counter() - start
        if method != "botorch" and rep == 0:
          first = seconds  # includes compilation; not part of the median
          continue
        fz, cz = problem(z)
        times.append(seconds)
        values.append(float(fz))
        feas.append(bool(cz <= 0))
      rows.append(
        {
          "n": n,
          "method": method,
          "median_s": statistics.median(times),
          "first_call_s": first,
          "mean_branin": float(np.mean(values)),
          "feasible": float(np.mean(feas)),
        }
      )
      r = rows[-1]
      print(
        f"n={n:4d} {method:10s} step {r['median_s']:7.2f} s"
        + (f" (first call {first:.1f} s)" if first else "")
        + f"  proposal Branin {r['mean_branin']:.3f} (optimum {OPTIMUM}), "
        f"feasible {r['feasible']:.0%}",
        flush=True,
      )
  print("\n| n | method | step (s, median) | vs BoTorch | proposal Branin | feasible |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    ref = next(
      (q["median_s"] for q in rows if q["n"] == r["n"] and q["method"] == "botorch"), None
    )
    ratio = f"{ref / r['median_s']:.2f}x faster" if ref else "-"
    print(
      f"| {r['n']} | {r['method']} | {r['median_s']:.2f} | {ratio} | "
      f"{r['mean_branin']:.3f} | {r['feasible']:.0%} |"
    )


if __name__ == "__main__":
  app.run(main)
