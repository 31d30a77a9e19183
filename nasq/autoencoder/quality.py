"""How good a trained autoencoder is: reconstruction, validity, predictor, convexity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from nasq.autoencoder.config import TARGETS
from nasq.autoencoder.model import TrainedAutoencoder
from nasq.autoencoder.train import ArchitectureData, make_data
from nasq.spaces import MacroSpace

Array = jax.Array
PRNGKey = jax.Array


def r_squared(pred: np.ndarray, true: np.ndarray) -> float:
  return float(1.0 - np.sum((pred - true) ** 2) / np.sum((true - true.mean()) ** 2))


def convexity_violation(
  fn: Callable[[Array], Array], key: PRNGKey, dim: int, num_chords: int = 2000
) -> float:
  """Largest ``f(t a + (1-t) b) - (t f(a) + (1-t) f(b))`` over random chords (<= 0 if
  convex), maximized over outputs; endpoints drawn from N(0, 4 I)."""
  ka, kb, kt = jax.random.split(key, 3)
  a = 2.0 * jax.random.normal(ka, (num_chords, dim))
  b = 2.0 * jax.random.normal(kb, (num_chords, dim))
  t = jax.random.uniform(kt, (num_chords, 1))
  gap = fn(t * a + (1 - t) * b) - (t * fn(a) + (1 - t) * fn(b))
  return float(jnp.max(gap))


def reconstruction(ae: TrainedAutoencoder, tokens: np.ndarray) -> dict[str, Any]:
  """Exact reconstruction rate of ``tokens`` (and per depth for the macro space)."""
  decoded = ae.decode(ae.encode(tokens))
  exact = (decoded == tokens).all(axis=1)
  out: dict[str, Any] = {"count": int(len(tokens)), "exact": float(exact.mean())}
  if isinstance(ae.space, MacroSpace):
    f = ae.space.fields_per_layer
    depth = (tokens.reshape(len(tokens), -1, f)[:, :, 0] != 0).sum(axis=1)
    out["exact_by_depth"] = {
      int(d): float(exact[depth == d].mean()) for d in np.unique(depth)
    }
  return out


def quality_report(
  ae: TrainedAutoencoder,
  holdout: ArchitectureData,
  *,
  num_prior: int = 10_000,
  num_uniform: int = 10_000,
  seed: int = 1,
) -> dict[str, Any]:
  """Everything the autoencoder is judged by, as a JSON-able dict.

  * reconstruction of the held-out architectures (and, for the macro space, of
    ``num_uniform`` architectures drawn uniformly from the whole space);
  * ``num_prior`` latent points drawn from N(0, I): valid decodes (checked by the space's
    own token rules, independently of the decoder's automaton) and distinct ones;
  * the cost predictor on the held-out set: R^2, Spearman, RMSE per target;
  * convexity of the trained predictor along random chords;
  * locality: how many tokens change when a held-out code is moved by a small step.
  """
  rng = np.random.default_rng(seed)
  report: dict[str, Any] = {"holdout": reconstruction(ae, holdout.tokens)}
  if isinstance(ae.space, MacroSpace) and num_uniform:
    uniform = ae.space.sample_tokens(rng, num_uniform, "uniform")
    report["uniform"] = reconstruction(ae, uniform)

  z_prior = rng.standard_normal((num_prior, ae.latent_dim)).astype(np.float32)
  decoded = ae.decode(z_prior)
  valid = [ae.space.is_valid(t) for t in decoded]
  report["prior"] = {
    "count": num_prior,
    "valid": float(np.mean(valid)),
    "distinct": len({t.tobytes() for t in decoded}),
  }
  # What the search relies on: the predictor at a latent point against the exact cost
  # of the architecture that point decodes to.
  exact = make_data(ae.space, decoded).raw_targets
  at_prior = ae.predict_log_costs(z_prior)
  report["predictor_at_prior"] = {
    name: {
      "r2": r_squared(at_prior[:, i], exact[:, i]),
      "rmse": float(np.sqrt(np.mean((at_prior[:, i] - exact[:, i]) ** 2))),
    }
    for i, name in enumerate(TARGETS)
  }

  z = ae.encode(holdout.tokens)
  pred = ae.predict_log_costs(z)
  report["predictor"] = {
    name: {
      "r2": r_squared(pred[:, i], holdout.raw_targets[:, i]),
      "spearman": float(stats.spearmanr(pred[:, i], holdout.raw_targets[:, i])[0]),
      "rmse": float(np.sqrt(np.mean((pred[:, i] - holdout.raw_targets[:, i]) ** 2))),
    }
    for i, name in enumerate(TARGETS)
  }
  report["predictor_convexity_max_gap"] = convexity_violation(
    ae.predict_fn(), jax.random.key(seed), ae.latent_dim
  )

  locality = {}
  sub = z[: min(len(z), 2000)]
  base = ae.decode(sub)
  for step in (0.05, 0.1, 0.25, 0.5):
    moved = ae.decode(sub + step * rng.standard_normal(sub.shape).astype(np.float32))
    locality[str(step)] = {
      "unchanged": float((moved == base).all(axis=1).mean()),
      "mean_tokens_changed": float((moved != base).sum(axis=1).mean()),
    }
  report["locality"] = locality
  report["z_mean_abs"] = float(np.abs(z.mean(axis=0)).mean())
  report["z_std_mean"] = float(z.std(axis=0).mean())
  return report
