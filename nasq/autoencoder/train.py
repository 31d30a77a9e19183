"""Training the autoencoder: data drawn from the space, the WAE losses, the loop."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from nasq.autoencoder.config import AutoencoderConfig
from nasq.autoencoder.model import (
  ArchitectureAutoencoder,
  TrainedAutoencoder,
  TrainingTables,
  build_model,
  option_scores,
)
from nasq.costs import compute_costs, macro_costs_batch
from nasq.spaces import MacroSpace, SearchSpace

Array = jax.Array
PyTree = Any


def mmd_imq(z: Array, prior: Array, scales: Sequence[float]) -> Array:
  """Unbiased MMD^2 between samples ``z`` and ``prior`` with a sum of IMQ kernels.

  ``k(x, y) = C / (C + |x - y|^2)`` with ``C = 2 * d * s`` for each scale ``s``, as in
  the WAE paper's code (the prior's expected squared distance is ``2 d``).
  """
  n, d = z.shape

  def gram(a, b):
    dist = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T
    dist = jnp.maximum(dist, 0.0)
    return sum(2 * d * s / (2 * d * s + dist) for s in scales)

  off = 1.0 - jnp.eye(n)
  kzz = (gram(z, z) * off).sum() / (n * (n - 1))
  kpp = (gram(prior, prior) * off).sum() / (n * (n - 1))
  kzp = gram(z, prior).mean()
  return kzz + kpp - 2 * kzp


def loss_fn(
  params: PyTree,
  batch: dict[str, Array],
  prior: Array,
  *,
  model: ArchitectureAutoencoder,
  tables: TrainingTables,
  config: AutoencoderConfig,
) -> tuple[Array, dict[str, Array]]:
  """Reconstruction CE over valid options + lambda * MMD + predictor squared error."""
  states = batch["states"]  # [n, B]
  z, logits, pred = model.apply(params, batch["tokens"], states)
  logp = option_scores(logits, tables.options[states], tables.valid[states])
  target = jnp.take_along_axis(logp, batch["choice"][..., None], axis=-1)[..., 0]
  recon = -target.sum(axis=1).mean()
  mmd = mmd_imq(z, prior, tuple(config.mmd_scales))
  pred_err = jnp.mean((pred - batch["targets"]) ** 2)
  loss = recon + config.mmd_weight * mmd + config.predictor_weight * pred_err
  correct = (jnp.argmax(logp, axis=-1) == batch["choice"]).all(axis=1)
  return loss, {
    "loss": loss,
    "recon": recon,
    "mmd": mmd,
    "predictor_mse": pred_err,
    "batch_exact": correct.mean(),
  }


def architecture_targets(
  space: SearchSpace, tokens: np.ndarray, states: np.ndarray, choices: np.ndarray
) -> np.ndarray:
  """[n, 2] float64: log(params) and log(MACs) of each token vector (exact costs)."""
  if isinstance(space, MacroSpace):
    params, macs = macro_costs_batch(space, states, choices)
  else:
    costs = [compute_costs(a) for a in space.decode_many(tokens)]
    params = np.array([c.params for c in costs], np.float64)
    macs = np.array([c.macs for c in costs], np.float64)
  return np.stack([np.log(params), np.log(np.maximum(macs, 1.0))], axis=1)


@dataclasses.dataclass
class ArchitectureData:
  """Token vectors with everything the loss needs, and the target standardization."""

  tokens: np.ndarray
  states: np.ndarray
  choice: np.ndarray
  raw_targets: np.ndarray  # unstandardized log(params), log(MACs)

  def batch_arrays(self, mean: np.ndarray, std: np.ndarray) -> dict[str, Array]:
    return {
      "tokens": jnp.asarray(self.tokens),
      "states": jnp.asarray(self.states),
      "choice": jnp.asarray(self.choice),
      "targets": jnp.asarray((self.raw_targets - mean) / std, jnp.float32),
    }


def make_data(
  space: SearchSpace,
  tokens: np.ndarray,
  states: np.ndarray | None = None,
  choices: np.ndarray | None = None,
) -> ArchitectureData:
  """Validates ``tokens`` (unless their automaton path is given) and computes targets."""
  if states is None or choices is None:
    states, choices = space.automaton.path(tokens)
  targets = architecture_targets(space, tokens, states, choices)
  return ArchitectureData(tokens, states, choices, targets)


def training_data(
  space: SearchSpace, config: AutoencoderConfig, rng: np.random.Generator
) -> tuple[ArchitectureData, ArchitectureData]:
  """(train, holdout). NAS-Bench-201: all cells, and the held-out set is all cells too.

  Macro: ``num_train + num_holdout`` draws from ``config.distribution``; the first
  ``num_holdout`` are held out and every training draw equal to one of them is dropped.
  """
  if space.name == "nb201":
    everything = make_data(space, space.all_tokens())
    return everything, everything
  n = int(config.num_train) + int(config.num_holdout)
  tokens, states, choices = space.sample_tokens(
    rng, n, config.distribution, return_path=True
  )
  h = int(config.num_holdout)
  seen = {t.tobytes() for t in tokens[:h]}
  keep = h + np.flatnonzero([t.tobytes() not in seen for t in tokens[h:]])
  holdout = make_data(space, tokens[:h], states[:h], choices[:h])
  return make_data(space, tokens[keep], states[keep], choices[keep]), holdout


def train(
  space: SearchSpace,
  config: AutoencoderConfig,
  *,
  progress: bool = True,
  log_every: int = 100,
) -> TrainedAutoencoder:
  """Trains an autoencoder on architectures of ``space`` and measures its quality."""
  a = space.automaton
  if a.completions[a.start] < 1:
    raise ValueError(
      f"space {space.name!r} has no valid architecture: no sequence of choices satisfies "
      f"its rules (check its input_shape, strides and min_layers)"
    )
  start = time.perf_counter()
  rng = np.random.default_rng(config.seed)
  train_data, holdout = training_data(space, config, rng)
  mean = train_data.raw_targets.mean(0)
  std = train_data.raw_targets.std(0) + 1e-6
  data = train_data.batch_arrays(mean, std)
  data_seconds = time.perf_counter() - start

  model = build_model(space, config)
  tables = TrainingTables.from_automaton(space.automaton)
  key = jax.random.key(config.seed)
  key, init_key = jax.random.split(key)
  params = model.init(init_key, data["tokens"][:2], data["states"][:2])
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, config.learning_rate, int(config.warmup_steps), int(config.steps)
  )
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
  opt_state = tx.init(params)
  grad_fn = jax.value_and_grad(
    functools.partial(loss_fn, model=model, tables=tables, config=config), has_aux=True
  )
  n, bs = len(train_data.tokens), int(config.batch_size)

  def one_step(carry, step_key):
    params, opt_state = carry
    idx_key, prior_key = jax.random.split(step_key)
    idx = jax.random.randint(idx_key, (bs,), 0, n)
    batch = jax.tree.map(lambda a: a[idx], data)
    prior = jax.random.normal(prior_key, (bs, model.latent_dim))
    (_, metrics), grads = grad_fn(params, batch, prior)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), metrics

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def run_chunk(params, opt_state, key):
    keys = jax.random.split(key, log_every)
    (params, opt_state), metrics = jax.lax.scan(one_step, (params, opt_state), keys)
    return params, opt_state, jax.tree.map(jnp.mean, metrics)

  history = []
  steps = int(config.steps)
  bar = tqdm(total=steps, desc="autoencoder", disable=not progress, unit="step")
  for step in range(0, steps, log_every):
    key, chunk_key = jax.random.split(key)
    params, opt_state, metrics = run_chunk(params, opt_state, chunk_key)
    metrics = {k: float(v) for k, v in metrics.items()}
    history.append({"step": step + log_every, **metrics})
    bar.update(log_every)
    bar.set_postfix(
      recon=f"{metrics['recon']:.3f}",
      exact=f"{metrics['batch_exact']:.3f}",
      mmd=f"{metrics['mmd']:.4f}",
      pred=f"{metrics['predictor_mse']:.4f}",
    )
    if not math.isfinite(metrics["loss"]):
      bar.close()
      raise FloatingPointError(
        f"autoencoder training diverged at step {step + log_every}: {metrics}"
      )
  bar.close()
  train_seconds = time.perf_counter() - start - data_seconds

  # The predictor's held-out error, measured through the finished model's own encoder.
  probe = TrainedAutoencoder(space, config, model, params, mean, std, np.zeros(2))
  pred = probe.predict_log_costs(probe.encode(holdout.tokens))
  return dataclasses.replace(
    probe,
    predictor_rmse=np.sqrt(np.mean((pred - holdout.raw_targets) ** 2, axis=0)),
    report={
      "num_train": int(len(train_data.tokens)),
      "data_seconds": data_seconds,
      "train_seconds": train_seconds,
      "final_metrics": history[-1],
    },
    history=tuple(history),
  )


def rank_weights(objectives: np.ndarray, k: float) -> np.ndarray:
  """Weighted retraining's weights (Tripp et al. 2020): w_i proportional to
  1 / (k N + rank_i), rank 0 the best of the N objectives (ties broken by order); -inf
  (e.g. over budget) ranks last. Normalized to sum 1. Small ``k`` puts most of the
  mass on the best few."""
  y = np.asarray(objectives, np.float64)
  ranks = np.empty(len(y))
  ranks[np.argsort(-y, kind="stable")] = np.arange(len(y))
  w = 1.0 / (k * len(y) + ranks)
  return w / w.sum()


class FineTuner:
  """Weighted retraining of a trained autoencoder (Tripp, Daxberger & Hernandez-Lobato,
  NeurIPS 2020), so the latent space gives more room to what scored well.

  ``__call__(tokens, weights, seed)`` continues training ``ae`` (always from its own
  weights, so the result is a function of its inputs alone) for ``steps`` Adam steps at
  a constant ``learning_rate``, with the training loss (reconstruction, MMD, cost
  predictor). Each batch is half ``base_size`` architectures drawn once from the space
  (as the autoencoder was trained: its config's distribution and seed, uniform cells on
  NAS-Bench-201; so the space stays covered) and half
  ``tokens`` drawn with probabilities ``weights`` (``rank_weights``). Batches are
  drawn on the host and the steps run in one compiled scan whose shapes do not depend
  on the number of tokens: one compilation per tuner."""

  def __init__(
    self,
    ae: TrainedAutoencoder,
    *,
    steps: int = 200,
    learning_rate: float = 1e-3,
    base_size: int = 4096,
  ):
    if steps < 1:
      raise ValueError(f"retrain_steps must be >= 1, got {steps}")
    self.ae, self.steps, self.base_size = ae, int(steps), int(base_size)
    config = ae.config
    rng = np.random.default_rng(config.seed)
    # NAS-Bench-201's autoencoder was trained on every cell: uniform draws of them.
    distribution = "uniform" if ae.space.name == "nb201" else config.distribution
    tokens, states, choices = ae.space.sample_tokens(
      rng, self.base_size, distribution, return_path=True
    )
    self.base = make_data(ae.space, tokens, states, choices)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
    grad_fn = jax.value_and_grad(
      functools.partial(loss_fn, model=ae.model, tables=ae.tables, config=config),
      has_aux=True,
    )
    dim = ae.latent_dim

    def one_step(carry, inputs):
      params, opt_state = carry
      batch, prior_key = inputs
      prior = jax.random.normal(prior_key, (batch["tokens"].shape[0], dim))
      (_, metrics), grads = grad_fn(params, batch, prior)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), metrics

    @jax.jit
    def run(params, batches, key):
      keys = jax.random.split(key, self.steps)
      (params, _), metrics = jax.lax.scan(
        one_step, (params, tx.init(params)), (batches, keys)
      )
      return params, jax.tree.map(lambda m: m[-1], metrics)

    self._run = run

  def __call__(
    self, tokens: np.ndarray, weights: np.ndarray, seed: int
  ) -> TrainedAutoencoder:
    ae = self.ae
    tokens = np.asarray(tokens, np.int32).reshape(-1, ae.space.num_positions)
    weights = np.asarray(weights, np.float64)
    if len(tokens) == 0 or len(weights) != len(tokens):
      raise ValueError(
        f"fine-tuning needs one weight per architecture, got {len(tokens)} "
        f"architectures and {len(weights)} weights"
      )
    chosen = make_data(ae.space, tokens)
    rng = np.random.default_rng(seed)
    bs = int(ae.config.batch_size)
    half = bs // 2
    base_idx = rng.integers(0, len(self.base.tokens), (self.steps, half))
    chosen_idx = rng.choice(
      len(tokens), (self.steps, bs - half), p=weights / weights.sum()
    )
    # Per step, half the base and half the chosen architectures, every field alike.
    batches = ArchitectureData(
      *(
        np.concatenate(
          [getattr(self.base, f.name)[base_idx], getattr(chosen, f.name)[chosen_idx]],
          axis=1,
        )
        for f in dataclasses.fields(ArchitectureData)
      )
    ).batch_arrays(ae.target_mean, ae.target_std)
    params, metrics = self._run(ae.params, batches, jax.random.key(seed))
    metrics = {k: float(v) for k, v in metrics.items()}
    if not math.isfinite(metrics["loss"]):
      raise FloatingPointError(f"autoencoder fine-tuning diverged: {metrics}")
    return ae.with_params(
      params,
      report={**ae.report, "fine_tuned": {"steps": self.steps, "seed": seed, **metrics}},
      history=(),
    )
