r"""Training throughput of nasq's jitted QAT step against the same network in PyTorch.

Every variant runs in its own process (XLA flags are read once per process), on the
same architecture, batch size and optimizer (AdamW), with random data:

  nasq-4bit          nasq's training step, 4-bit fake-quantized weights (the QAT path)
  nasq-float         nasq's training step, float weights
  nasq-4bit-eigen    nasq-4bit with XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=
                     (XLA's Eigen convolutions instead of YNNPACK's; nasq set this
                     flag under jaxlib 0.10.2, where it was 2-3x faster)
  flax-plain-float   nn.Conv + nn.BatchNorm + nn.max_pool, default XLA flags (baseline)
  torch-nchw         PyTorch eager, float, NCHW
  torch-cl           PyTorch eager, float, channels_last
  torch-cl-4bit      PyTorch eager, channels_last, 4-bit fake quantization (STE)

It also checks that nasq's gradients (tuned XLA path, dot-product BatchNorm statistics,
reshape pooling) equal stock Flax's on one batch: in float64, where rounding does not
hide a difference, and in float32 against that float64 reference.

  python experiments/benchmarks/train_throughput.py            # both networks
  python experiments/benchmarks/train_throughput.py --networks=fmnist_ref --steps=20

Needs ``pip install -e .[bench]`` (torch 2.13.0, CPU build). About 4 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _torch_qat  # noqa: E402

_NETWORKS = flags.DEFINE_list(
  "networks", ["fmnist_ref", "cifar_ref"], "Reference networks (nasq.spaces.macro)."
)
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats (the median is reported).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_VARIANT = flags.DEFINE_string("variant", "", "Internal: run one variant and print JSON.")
_NETWORK = flags.DEFINE_string("network", "", "Internal: the network of --variant.")
_GRAD_OUT = flags.DEFINE_string("grad_out", "", "Internal: where --variant=grad-* saves.")

VARIANTS = (
  "nasq-4bit",
  "nasq-float",
  "nasq-4bit-eigen",
  "flax-plain-float",
  "torch-nchw",
  "torch-cl",
  "torch-cl-4bit",
)


def _time_steps(step, warmup: int, steps: int, repeats: int, batch: int) -> dict:
  t0 = time.perf_counter()
  for _ in range(warmup):
    step()
  first = time.perf_counter() - t0
  rates = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      step()
    rates.append(steps * batch / (time.perf_counter() - t0))
  rates.sort()
  return {"images_per_s": rates[len(rates) // 2], "warmup_s": first}


def plain_flax(arch):
  """The same network with stock Flax layers (nn.Conv, nn.BatchNorm, nn.max_pool)."""
  import flax.linen as nn

  class PlainFlax(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
      for i, layer in enumerate(arch.layers):
        if layer.kind == "conv":
          x = nn.Conv(layer.channels, (3, 3), use_bias=False, name=f"layer{i}_conv")(x)
          bn = nn.BatchNorm(
            use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"layer{i}_bn"
          )
          x = nn.relu(bn(x))
        else:
          x = nn.max_pool(x, (2, 2), (2, 2))
      return nn.Dense(arch.num_classes, name="classifier")(x.mean(axis=(1, 2)))

  return PlainFlax()


def run_grads(variant: str, network: str, batch: int, out: str) -> dict:
  """Saves one batch's loss gradients in float32 and float64 (``grad-nasq`` runs nasq's
  model, ``grad-plain`` the stock Flax one), from nasq's initial variables."""
  import jax

  jax.config.update("jax_enable_x64", True)
  import jax.numpy as jnp
  import numpy as np
  import optax

  from nasq import models
  from nasq.spaces.macro import reference_architecture

  arch = reference_architecture(network)
  nasq_model = models.build_model(arch, 32)
  model = nasq_model if variant == "grad-nasq" else plain_flax(arch)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, *arch.input_shape))
  y = jnp.asarray(rng.integers(0, arch.num_classes, batch))
  variables = nasq_model.init(jax.random.key(0), jnp.zeros((1, *arch.input_shape)))
  saved = {}
  for dtype in (jnp.float32, jnp.float64):
    v = jax.tree.map(lambda a, dtype=dtype: a.astype(dtype), variables)

    def loss(params, v=v, dtype=dtype):
      logits, _ = model.apply(
        {"params": params, "batch_stats": v["batch_stats"]},
        jnp.asarray(x, dtype),
        train=True,
        mutable=["batch_stats"],
      )
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.jit(jax.grad(loss))(v["params"])
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
      name = "/".join(str(getattr(k, "key", k)) for k in path)
      saved[f"{jnp.dtype(dtype).name}/{name}"] = np.asarray(g, np.float64)
  np.savez(out, **saved)
  return {"tensors": len(saved) // 2}


def run_jax(variant: str, network: str, steps: int, repeats: int, batch: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from nasq import models
  from nasq.spaces.macro import reference_architecture

  arch = reference_architecture(network)

  bits = 4 if "4bit" in variant else 32
  if variant == "flax-plain-float":
    model = plain_flax(arch)
  else:
    model = models.build_model(arch, bits)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, *arch.input_shape)), jnp.float32)
  y = jnp.asarray(rng.integers(0, arch.num_classes, batch))
  variables = models.build_model(arch, bits).init(jax.random.key(0), x[:1], train=False)
  tx = optax.adamw(1e-3)

  def loss_fn(params, batch_stats):
    logits, upd = model.apply(
      {"params": params, "batch_stats": batch_stats},
      x,
      train=True,
      mutable=["batch_stats"],
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd

  @jax.jit
  def step(params, batch_stats, opt_state):
    (loss, upd), g = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), upd["batch_stats"], opt_state, loss

  state = [variables["params"], variables["batch_stats"], tx.init(variables["params"])]

  def one():
    out = step(*state)
    state[:] = out[:3]
    out[3].block_until_ready()

  return _time_steps(one, 2, steps, repeats, batch)


def run_torch(variant: str, network: str, steps: int, repeats: int, batch: int) -> dict:
  import torch
  import torch.nn.functional as F

  from nasq.spaces.macro import reference_architecture

  torch.set_num_threads(os.cpu_count() or 1)
  arch = reference_architecture(network)
  bits = 4 if "4bit" in variant else 32

  QConv = _torch_qat.quant_conv_class(bits)

  layers, c = [], arch.input_shape[2]
  for layer in arch.layers:
    if layer.kind == "conv":
      layers += [
        QConv(c, layer.channels, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(layer.channels),
        torch.nn.ReLU(),
      ]
      c = layer.channels
    else:
      layers.append(torch.nn.MaxPool2d(2))
  layers += [
    torch.nn.AdaptiveAvgPool2d(1),
    torch.nn.Flatten(),
    torch.nn.Linear(c, arch.num_classes),
  ]
  model = torch.nn.Sequential(*layers)
  h, w, c_in = arch.input_shape
  x = torch.randn(batch, c_in, h, w)
  y = torch.randint(0, arch.num_classes, (batch,))
  if "cl" in variant:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  opt = torch.optim.AdamW(model.parameters(), 1e-3)

  def one():
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()

  return _time_steps(one, 2, steps, repeats, batch)


def main(argv):
  del argv
  if _VARIANT.value:
    if _VARIANT.value.startswith("grad"):
      out = run_grads(_VARIANT.value, _NETWORK.value, _BATCH.value, _GRAD_OUT.value)
    else:
      runner = run_torch if _VARIANT.value.startswith("torch") else run_jax
      out = runner(
        _VARIANT.value, _NETWORK.value, _STEPS.value, _REPEATS.value, _BATCH.value
      )
    print("RESULT " + json.dumps(out))
    return
  import numpy as np

  print(
    f"machine: {os.cpu_count()} CPU cores; batch {_BATCH.value}; median of "
    f"{_REPEATS.value} x {_STEPS.value} steps"
  )
  tmp = tempfile.mkdtemp()
  for network in _NETWORKS.value:
    results = {}
    for variant in VARIANTS + ("grad-nasq", "grad-plain"):
      env = dict(os.environ)
      env.pop("XLA_FLAGS", None)
      if variant == "nasq-4bit-eigen":
        env["XLA_FLAGS"] = "--xla_cpu_experimental_ynn_fusion_type="
      cmd = [
        sys.executable,
        __file__,
        f"--variant={variant}",
        f"--network={network}",
        f"--steps={_STEPS.value}",
        f"--repeats={_REPEATS.value}",
        f"--batch_size={_BATCH.value}",
        f"--grad_out={os.path.join(tmp, f'{network}-{variant}.npz')}",
      ]
      proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
      line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
      if proc.returncode or not line:
        print(f"{network} {variant}: FAILED\n{proc.stderr[-2000:]}")
        continue
      results[variant] = json.loads(line[0][7:])
    print(f"\n## {network}")
    print("| variant | images/s | first 2 steps (s) | vs torch-cl | vs torch-nchw |")
    print("|---|---|---|---|---|")

    def ratio(r, ref, results=results):
      if ref not in results:
        return "n/a"
      return f"{r['images_per_s'] / results[ref]['images_per_s']:.2f}x"

    for variant, r in results.items():
      if variant.startswith("grad"):
        continue
      print(
        f"| {variant} | {r['images_per_s']:.0f} | {r['warmup_s']:.1f} | "
        f"{ratio(r, 'torch-cl')} | {ratio(r, 'torch-nchw')} |"
      )
    if "nasq-4bit" in results and "nasq-float" in results:
      print(
        f"4-bit fake-quantization overhead (nasq-float / nasq-4bit): "
        f"{results['nasq-float']['images_per_s'] / results['nasq-4bit']['images_per_s']:.3f}x"
      )
    a, b = (os.path.join(tmp, f"{network}-grad-{m}.npz") for m in ("nasq", "plain"))
    if os.path.exists(a) and os.path.exists(b):
      ga, gb = np.load(a), np.load(b)
      names = [k.split("/", 1)[1] for k in gb.files if k.startswith("float64/")]

      def max_rel(u, pu, v, pv, names=names):
        return max(
          float(
            np.linalg.norm(u[f"{pu}/{n}"] - v[f"{pv}/{n}"])
            / (np.linalg.norm(v[f"{pv}/{n}"]) + 1e-300)
          )
          for n in names
        )

      print(
        f"gradient check over {len(names)} tensors, max relative difference per tensor: "
        f"nasq (tuned XLA path) vs stock Flax (default path) in float64 "
        f"{max_rel(ga, 'float64', gb, 'float64'):.1e}; float32 vs the float64 reference: nasq "
        f"{max_rel(ga, 'float32', gb, 'float64'):.1e}, stock Flax {max_rel(gb, 'float32', gb, 'float64'):.1e}"
      )


if __name__ == "__main__":
  app.run(main)
