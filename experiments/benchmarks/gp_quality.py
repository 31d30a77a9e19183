r"""How well latent BO's GP ranks architectures it has not seen (AnalogNAS-Bench).

  python experiments/benchmarks/gp_quality.py            # --num_fit=100 --draws=4

The GP latent BO fits (the kernel, prior and MAP fit of configs/bench_nb201.py's
strategy settings) on ``--num_fit`` random NAS-Bench-201 cells, predicting every other
cell, once per (input, output transform):

* inputs: the autoencoder's latent codes in the unit cube (what latent BO uses), the
  cells' one-hot tokens (what a kernel on the architecture itself would see), or both
  concatenated;
* outputs: standardized accuracy ("none") or the copula transform (ranks to normal
  quantiles, latent BO's default).

Reports, as means over ``--draws`` random draws of the fitted cells (the same draws for
every row): Spearman's rank correlation of the posterior mean with the true accuracy
over the held-out cells, the same within the true top decile, and the mean true accuracy
of the 50 cells the GP ranks highest.
"""

from __future__ import annotations

import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from scipy import stats

from nasq import autoencoder as ae_lib
from nasq import gp
from nasq.runs import compare
from nasq.runs.config import from_config, space_from_config
from nasq.spaces import make_space
from nasq.spaces import one_hot as one_hot_tokens
from nasq.strategies import StrategySettings
from nasq.strategies.latent_bo import LatentBO, _padded, output_transform

_NUM_FIT = flags.DEFINE_integer("num_fit", 100, "Cells the GP is fitted to.")
_DRAWS = flags.DEFINE_integer("draws", 4, "Random draws of the fitted cells.")
_TOP = 50


def one_hot(space, archs) -> np.ndarray:
  return one_hot_tokens(np.stack([space.encode(a) for a in archs]), space.vocab_sizes)


def scores(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
  top_decile = true >= np.quantile(true, 0.9)
  return (
    float(stats.spearmanr(pred, true).statistic),
    float(stats.spearmanr(pred[top_decile], true[top_decile]).statistic),
    float(true[np.argsort(-pred)[:_TOP]].mean()),
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = compare.default_config()
  settings = from_config(StrategySettings, config.strategy_config, "strategy_config")
  space = make_space(space_from_config(config.space))
  table = compare.make_table(config, space)
  archs = list(space.all_architectures())
  acc = np.array([table.table[a.to_string()][config.metric] for a in archs])
  ae = ae_lib.load_or_train(
    space,
    from_config(ae_lib.AutoencoderConfig, config.autoencoder, "autoencoder"),
    config.cache_dir,
  )
  lbo = LatentBO(settings, ae)  # its code normalization and hyperparameter fit
  codes = np.concatenate(
    [
      ae.encode(np.stack([space.encode(a) for a in archs[i : i + 4096]]))
      for i in range(0, len(archs), 4096)
    ]
  )
  unit, tokens = lbo._unit(codes), one_hot(space, archs)
  inputs = {
    "latent codes": unit,
    "one-hot tokens": tokens,
    # Both side by side: one ARD kernel over the concatenation.
    "latent codes + one-hot tokens": np.concatenate([unit, tokens], axis=1),
  }
  rng = np.random.default_rng(0)
  draws = [
    rng.choice(len(archs), _NUM_FIT.value, replace=False) for _ in range(_DRAWS.value)
  ]
  rows = []
  start = time.perf_counter()
  for input_name, x_all in inputs.items():
    for transform in ("none", "copula"):
      per_draw = []
      for fit_idx in draws:
        held = np.setdiff1d(np.arange(len(archs)), fit_idx)
        x = x_all[fit_idx]
        y = output_transform(acc[fit_idx], transform)
        params = lbo._fit_full(x, y)  # latent BO's full fit of (x, y)
        xp, ys, mask = _padded(x, y)
        post = gp.condition(settings.kernel, params, xp, ys, mask)
        mean, _ = gp.predict(settings.kernel, post, jnp.asarray(x_all[held]))
        per_draw.append(scores(np.asarray(mean), acc[held]))
      m = np.mean(per_draw, axis=0)
      rows.append((input_name, transform, *m))
  wall = time.perf_counter() - start
  print(
    f"GP ranking of held-out AnalogNAS-Bench cells ({config.metric}): {_NUM_FIT.value} "
    f"fitted, {len(archs) - _NUM_FIT.value} held out, means over {_DRAWS.value} draws; "
    f"{settings.kernel}, MAP {settings.map_restarts} x {settings.map_steps} steps"
  )
  print()
  print(
    f"| input | output transform | Spearman | Spearman in the top decile | "
    f"mean accuracy of the predicted top {_TOP} |"
  )
  print("|---|---|---|---|---|")
  for input_name, transform, rho, rho_top, top in rows:
    print(f"| {input_name} | {transform} | {rho:.3f} | {rho_top:.3f} | {top:.2f} |")
  print()
  print(
    f"Table best {acc.max():.2f}, mean {acc.mean():.2f}. {wall:.0f} s on "
    f"{platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s)."
  )


if __name__ == "__main__":
  app.run(main)
