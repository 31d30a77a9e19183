"""Quantization-aware training and evaluation of one architecture.

``train_step`` and ``eval_step`` are pure; their collaborators (model, optimizer,
normalization constants) are bound by keyword and the result jitted. Randomness (data
augmentation) enters as a key folded with the step number.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from tqdm.auto import tqdm

from nasq import costs as costs_lib
from nasq import data as data_lib
from nasq.models import build_model, init_variables
from nasq.quant import FLOAT_BITS, QuantConfig
from nasq.spaces import Architecture

Array = jax.Array
PRNGKey = jax.Array
Batch = dict[str, Array]
STATUS_OK, STATUS_FAILED = "ok", "failed"
OPTIMIZERS = ("adamw", "sgd")
AUGMENTS = ("dataset", "none", "crop_flip")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Training schedule of one candidate (the ``train`` and ``final_train`` sections)."""

  epochs: int = 10  # Passes over the training split.
  batch_size: int = 128  # Training batch size.
  eval_batch_size: int = 1000  # Evaluation batch size (last batch padded, masked).
  optimizer: str = "adamw"  # "adamw" or "sgd" (Nesterov momentum 0.9).
  learning_rate: float = 3e-3  # Peak learning rate (linear warmup, then cosine to 0).
  warmup_epochs: float = 1.0  # Linear warmup length, in epochs.
  weight_decay: float = 5e-4  # Decoupled weight decay on conv/dense kernels only.
  label_smoothing: float = 0.0  # Label smoothing of the cross-entropy.
  # Training augmentation: "dataset" (the dataset's own: crop_flip for CIFAR and STL-10,
  # none for Fashion-MNIST), "none", or "crop_flip" (random crop after zero padding of
  # crop_padding pixels, or the dataset's padding when 0, and horizontal flip).
  augment: str = "dataset"
  crop_padding: int = 0
  # Epochs trained with float weights before quantization-aware training starts (a
  # float warm start inside one learning-rate schedule); 0: QAT from the first step.
  float_epochs: int = 0
  seed: int = 0  # Initialization, shuffling and augmentation seed.
  final: bool = False  # True: train on train+validation and report test accuracy.
  progress: bool = True  # Show a progress bar.
  # Local devices each batch is split over (data parallel, parameters replicated); 0 =
  # all local devices. batch_size and eval_batch_size must be divisible by it.
  num_devices: int = 1

  def __post_init__(self):
    for field in ("epochs", "batch_size", "eval_batch_size"):
      if int(getattr(self, field)) < 1:
        raise ValueError(f"train.{field} must be >= 1, got {getattr(self, field)}")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(
        f"train.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"
      )
    if self.augment not in AUGMENTS:
      raise ValueError(f"train.augment must be one of {AUGMENTS}, got {self.augment!r}")
    if self.crop_padding < 0:
      raise ValueError(f"train.crop_padding must be >= 0, got {self.crop_padding}")
    if not 0 <= self.float_epochs < max(self.epochs, 1):
      raise ValueError(
        f"train.float_epochs must be in [0, train.epochs) = [0, {self.epochs}), got "
        f"{self.float_epochs}"
      )

  def augmentation(self, data: data_lib.Dataset) -> tuple[str, int]:
    """(augmentation, crop padding) for ``data``."""
    if self.augment == "dataset":
      return data.augment, data.crop_padding
    return self.augment, self.crop_padding or data.crop_padding


def use_compilation_cache(path: str) -> None:
  """Keeps compiled XLA programs in ``path`` across processes (JAX's persistent
  compilation cache), so a resumed search, the promotions' and the final retraining's
  repeated programs and a rerun load what an earlier run compiled instead of compiling
  it again; "" leaves JAX's setting alone. A ``JAX_COMPILATION_CACHE_DIR`` already set
  in the environment wins. Programs that compiled in under 0.5 s are not kept, and the
  cache is pruned to 2 GiB (least recently used first)."""
  if not path or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_compilation_cache_max_size", 2 << 30)


def check_batch_fits(config: TrainConfig, examples: int, field: str, data: str) -> None:
  """Raises, naming the fields, if ``config``'s batch is larger than the ``examples``
  it trains on (no full batch: no step)."""
  if config.batch_size > examples:
    raise ValueError(
      f"{field}.batch_size {config.batch_size} exceeds the {examples} training "
      f"examples of {data}: lower {field}.batch_size or give it more examples"
    )


def data_parallel_shardings(config: TrainConfig) -> tuple[Any, Any] | None:
  """(batch sharding, replicated sharding) over a 1-D mesh of ``config.num_devices``
  local devices, or None for one device (the single-device path, unchanged)."""
  devices = jax.local_devices()
  n = len(devices) if int(config.num_devices) == 0 else int(config.num_devices)
  if not 1 <= n <= len(devices):
    raise ValueError(
      f"train.num_devices must be 0 (all) or in [1, {len(devices)}] (the local "
      f"devices), got {config.num_devices}"
    )
  for field in ("batch_size", "eval_batch_size"):
    if int(getattr(config, field)) % n:
      raise ValueError(
        f"train.{field} {getattr(config, field)} must be divisible by the {n} devices it is "
        f"split over (train.num_devices)"
      )
  if n == 1:
    return None
  mesh = jax.sharding.Mesh(np.asarray(devices[:n]), ("data",))
  return (
    jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")),
    jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
  )


class TrainState(train_state.TrainState):
  batch_stats: Any


def state_factory(
  model: nn.Module, tx: optax.GradientTransformation, input_shape
) -> Callable[[jax.Array], TrainState]:
  """key -> initial variables and optimizer state (jit it: see ``create_state``)."""

  def create(k):
    variables = init_variables(model, input_shape, k)
    return TrainState.create(
      apply_fn=model.apply,
      params=variables["params"],
      batch_stats=variables.get("batch_stats", {}),  # none without BatchNorm
      tx=tx,
    )

  return create


def create_state(
  model: nn.Module, tx: optax.GradientTransformation, input_shape, key: jax.Array
) -> TrainState:
  """Initial variables and optimizer state, built by one compiled program.

  Run op by op instead, every new architecture would leave dozens of small compiled
  programs (one per operation and shape) in JAX's global caches for the rest of the
  process; a jitted function's programs are freed with the function.
  """
  return jax.jit(state_factory(model, tx, input_shape))(key)


@dataclasses.dataclass
class TrainResult:
  """What training one candidate produced. ``status`` is ``ok`` or ``failed``."""

  status: str
  val_accuracy: float | None
  test_accuracy: float | None
  train_loss: float | None
  epochs_completed: int
  wall_time_s: float
  costs: dict[str, int]
  failure_reason: str = ""
  epoch_metrics: list[dict[str, float]] = dataclasses.field(default_factory=list)
  # Wall seconds by phase: "compile" (tracing and compiling the initialization, training
  # and evaluation programs), "init" (running the initialization), "train" (the
  # optimizer steps), "eval" (the evaluation passes); the rest of wall_time_s is setup.
  phase_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
  variables: Any = dataclasses.field(default=None, repr=False)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(dataclasses.replace(self, variables=None))
    d.pop("variables")
    return d


# --- pure steps --------------------------------------------------------------------------


def normalize(images: Array, *, mean: Array, std: Array) -> Array:
  return (images.astype(jnp.float32) / 255.0 - mean) / std


def augment_crop_flip(images: Array, key: PRNGKey, padding: int) -> Array:
  """Per-image random crop (after zero padding) and horizontal flip."""
  n, h, w, _ = images.shape
  k_off, k_flip = jax.random.split(key)
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(k_off, (n, 2), 0, 2 * padding + 1)
  crop = jax.vmap(
    lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, im.shape[-1]))
  )
  images = crop(padded, offsets)
  flip = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1], images)


def train_step(
  state: TrainState,
  batch: Batch,
  key: PRNGKey,
  *,
  model: nn.Module,
  mean: Array,
  std: Array,
  augment: str,
  crop_padding: int,
  label_smoothing: float,
) -> tuple[TrainState, dict[str, Array]]:
  """One optimizer step on one batch."""
  images = normalize(batch["image"], mean=mean, std=std)
  if augment == "crop_flip":
    images = augment_crop_flip(images, jax.random.fold_in(key, state.step), crop_padding)
  num_classes = model.arch.num_classes
  targets = optax.smooth_labels(
    jax.nn.one_hot(batch["label"], num_classes), label_smoothing
  )

  def loss_fn(params):
    logits, updates = model.apply(
      {"params": params, "batch_stats": state.batch_stats},
      images,
      train=True,
      mutable=["batch_stats"],
    )
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    state.params
  )
  state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
  return state, {"loss": loss, "accuracy": accuracy}


def eval_step(
  state: TrainState, batch: Batch, *, model: nn.Module, mean: Array, std: Array
) -> dict[str, Array]:
  """Sums of correct predictions and losses over the real (masked) examples."""
  logits = model.apply(
    {"params": state.params, "batch_stats": state.batch_stats},
    normalize(batch["image"], mean=mean, std=std),
    train=False,
  )
  mask = batch["mask"]
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  correct = (jnp.argmax(logits, -1) == batch["label"]) & mask
  return {
    "correct": correct.sum(),
    "loss": jnp.where(mask, loss, 0.0).sum(),
    "count": mask.sum(),
  }


# --- the loop ----------------------------------------------------------------------------


def make_optimizer(
  config: TrainConfig, steps_per_epoch: int
) -> optax.GradientTransformation:
  """Optimizer with linear warmup and cosine decay to zero over the whole run."""
  total = max(1, config.epochs * steps_per_epoch)
  warmup = min(int(config.warmup_epochs * steps_per_epoch), total - 1)
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, config.learning_rate, warmup, total, 0.0
  )
  kernels_only = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  if config.optimizer == "adamw":
    return optax.adamw(schedule, weight_decay=config.weight_decay, mask=kernels_only)
  return optax.chain(
    optax.add_decayed_weights(config.weight_decay, mask=kernels_only),
    optax.sgd(schedule, momentum=0.9, nesterov=True),
  )


def evaluate(
  state: TrainState,
  split: data_lib.Split,
  eval_fn: Callable,
  batch_size: int,
  place_batch: Callable = lambda batch: batch,
) -> tuple[float, float]:
  """(accuracy, mean loss) over a whole split."""
  totals = None
  for batch in data_lib.eval_batches(split, batch_size):
    out = eval_fn(state, place_batch(batch))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  return float(totals["correct"] / totals["count"]), float(
    totals["loss"] / totals["count"]
  )


def train_and_evaluate(
  architecture: Architecture,
  quantization: QuantConfig,
  data: data_lib.Dataset,
  config: TrainConfig,
  *,
  on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
  """Trains ``architecture`` with fake-quantized weights and evaluates it.

  With ``config.final`` False it trains on ``data.train`` and reports validation
  accuracy (the search's signal; the test split is not touched). With ``config.final``
  True it trains on train+validation and reports test accuracy.

  A run whose loss becomes NaN/inf, or that fails in XLA (for example out of memory),
  ends early with status ``failed`` and the reason; it never raises for those.
  """
  start = time.perf_counter()
  costs = costs_lib.compute_costs(
    architecture, quantization.weight_bits, quantization.activation_bits
  ).summary()
  model = build_model(
    architecture, quantization.weight_bits, integer_qat=quantization.integer_qat
  )
  train_split = data.train_and_val() if config.final else data.train
  check_batch_fits(config, len(train_split), "train", f"dataset {data.name!r}")
  steps_per_epoch = len(train_split) // config.batch_size
  tx = make_optimizer(config, steps_per_epoch)
  shardings = data_parallel_shardings(config)
  if shardings is None:
    place_batch = place_state = lambda tree: tree  # noqa: E731
  else:
    # Batches split over the mesh, parameters and optimizer state replicated: jit
    # partitions the step, and BatchNorm's batch statistics become all-reduces.
    place_batch = functools.partial(jax.device_put, device=shardings[0])
    place_state = functools.partial(jax.device_put, device=shardings[1])
  mean, std = jnp.asarray(data.mean), jnp.asarray(data.std)
  augment, crop_padding = config.augmentation(data)

  def make_step(m: nn.Module) -> Callable:
    step = functools.partial(
      train_step,
      model=m,
      mean=mean,
      std=std,
      augment=augment,
      crop_padding=crop_padding,
      label_smoothing=config.label_smoothing,
    )
    return jax.jit(step, donate_argnums=0)

  key = jax.random.key(config.seed)
  init_key, aug_key = jax.random.split(key)
  eval_split = data.test if config.final else data.val
  result = TrainResult(STATUS_OK, None, None, None, 0, 0.0, costs)
  phases = result.phase_seconds
  state = None
  bar = tqdm(
    total=config.epochs * steps_per_epoch,
    desc=f"train {architecture.to_string()[:40]}",
    unit="step",
    leave=False,
    dynamic_ncols=True,
    disable=not config.progress,
  )
  try:
    # Every program is compiled before any runs (and timed as such): the
    # initialization, the training step (and the float warm start's, if any) and the
    # evaluation step, from the shapes of the state and of one batch of each kind.
    clock = time.perf_counter()
    create = state_factory(model, tx, data.input_shape)
    state_shape = jax.eval_shape(create, init_key)
    if shardings is not None:
      state_shape = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=shardings[1]),
        state_shape,
      )
    train_batch = place_batch(
      next(data_lib.train_batches(train_split, config.batch_size, config.seed, 0))
    )
    eval_batch = place_batch(
      next(data_lib.eval_batches(eval_split, config.eval_batch_size))
    )
    init_fn = jax.jit(create).lower(init_key).compile()
    step_fn = make_step(model).lower(state_shape, train_batch, aug_key).compile()
    float_step_fn = None
    if config.float_epochs:
      # A float warm start: the same variables, every kernel unquantized.
      float_model = build_model(
        architecture,
        FLOAT_BITS,
        float_weights=True,
        integer_qat=quantization.integer_qat,
      )
      float_step_fn = make_step(float_model).lower(state_shape, train_batch, aug_key)
      float_step_fn = float_step_fn.compile()
    eval_fn = (
      jax.jit(functools.partial(eval_step, model=model, mean=mean, std=std))
      .lower(state_shape, eval_batch)
      .compile()
    )
    phases["compile"] = time.perf_counter() - clock

    clock = time.perf_counter()
    state = place_state(jax.block_until_ready(init_fn(init_key)))
    phases["init"] = time.perf_counter() - clock
    phases["train"] = phases["eval"] = 0.0
    for epoch in range(config.epochs):
      clock = time.perf_counter()
      loss_sum, acc_sum = jnp.zeros(()), jnp.zeros(())
      for batch in data_lib.train_batches(
        train_split, config.batch_size, config.seed, epoch
      ):
        step = float_step_fn if epoch < config.float_epochs else step_fn
        state, metrics = step(state, place_batch(batch), aug_key)
        loss_sum, acc_sum = loss_sum + metrics["loss"], acc_sum + metrics["accuracy"]
        bar.update(1)
      train_loss = float(loss_sum) / steps_per_epoch
      phases["train"] += time.perf_counter() - clock
      epoch_metrics = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "train_accuracy": float(acc_sum) / steps_per_epoch,
      }
      if not math.isfinite(train_loss):
        result = dataclasses.replace(
          result,
          status=STATUS_FAILED,
          epochs_completed=epoch + 1,
          failure_reason=f"non-finite training loss ({train_loss}) in epoch {epoch + 1}",
        )
        break
      if not config.final:
        clock = time.perf_counter()
        epoch_metrics["val_accuracy"], epoch_metrics["val_loss"] = evaluate(
          state, data.val, eval_fn, config.eval_batch_size, place_batch
        )
        phases["eval"] += time.perf_counter() - clock
      result.epoch_metrics.append(epoch_metrics)
      result = dataclasses.replace(
        result,
        epochs_completed=epoch + 1,
        train_loss=train_loss,
        val_accuracy=epoch_metrics.get("val_accuracy"),
      )
      bar.set_postfix({k: round(v, 4) for k, v in epoch_metrics.items() if k != "epoch"})
      if on_epoch is not None:
        on_epoch(epoch + 1, epoch_metrics)
    if result.status == STATUS_OK and config.final:
      clock = time.perf_counter()
      test_accuracy, _ = evaluate(
        state, data.test, eval_fn, config.eval_batch_size, place_batch
      )
      phases["eval"] += time.perf_counter() - clock
      result = dataclasses.replace(result, test_accuracy=test_accuracy)
  except (jax.errors.JaxRuntimeError, MemoryError, FloatingPointError) as e:
    result = dataclasses.replace(
      result, status=STATUS_FAILED, failure_reason=f"{type(e).__name__}: {e}"[:2000]
    )
  finally:
    bar.close()
  if state is not None and result.status == STATUS_OK:
    result.variables = {"params": state.params, "batch_stats": state.batch_stats}
  result.wall_time_s = time.perf_counter() - start
  return result
