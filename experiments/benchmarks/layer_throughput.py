r"""Forward + backward time of every layer kind of the macro space, nasq against PyTorch.

Each layer (with BatchNorm and ReLU, as nasq builds it, then global average pooling and
a 10-class classifier) runs at the shapes the default search's space produces: 28x28 and
14x14 inputs with 16 or 64 channels, batch 128, 4-bit weight QAT. One timed step is the
loss's forward pass and its gradients with respect to the weights and the input (as for
a layer inside a network), BatchNorm statistics updated; no optimizer. Variants, each
in its own process, one run:

  nasq            this checkout
  nasq@BASELINE   nasq at --baseline (a git worktree of that commit), if given
  torch-cl        PyTorch eager, channels_last, 4-bit fake quantization (STE)

  python experiments/benchmarks/layer_throughput.py --baseline=c6f66cd
  python experiments/benchmarks/layer_throughput.py --layers=dwsep7:s1 --sizes=28 --channels=64

Needs torch (``pip install -e .[bench]``). About 10 minutes on 2 cores with a baseline.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _subprocess  # noqa: E402
import _torch_qat  # noqa: E402

LAYERS = (
  "conv1:s1",
  "conv3:s1",
  "conv5:s1",
  "conv7:s1",
  "conv1:s2",
  "conv3:s2",
  "conv5:s2",
  "conv7:s2",
  "dwsep3:s1",
  "dwsep5:s1",
  "dwsep7:s1",
  "dwsep3:s2",
  "dwsep5:s2",
  "dwsep7:s2",
  "maxpool:s1",
  "maxpool:s2",
  "avgpool:s1",
  "avgpool:s2",
  "conv3:s1:res",
  "dwsep3:s1:res",
)

_LAYERS = flags.DEFINE_list("layers", list(LAYERS), "Layer kinds (op:stride[:res]).")
_SIZES = flags.DEFINE_list("sizes", ["28", "14"], "Input heights = widths.")
_CHANNELS = flags.DEFINE_list("channels", ["16", "64"], "Input = output channels.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_BITS = flags.DEFINE_integer("weight_bits", 4, "Weight bits (QAT).")
_BASELINE = flags.DEFINE_string("baseline", "", "A commit to measure nasq at as well.")
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 0.4, "Least time of one timed repeat.")
_VARIANT = flags.DEFINE_string("variant", "", "Internal: run one variant, print JSON.")


def layer_string(layer: str, channels: int) -> str:
  """'dwsep3:s1:res' at 16 channels -> 'dwsep3:s1:c16:res' (pools keep channels)."""
  op, stride, *res = layer.split(":")
  if "pool" in op:
    return f"{op}:{stride}"
  return ":".join([op, stride, f"c{channels}", *res])


def _time(step, min_seconds: float, repeats: int = 3) -> float:
  """Median milliseconds per call over ``repeats`` timed runs of >= min_seconds."""
  step()
  step()
  per_call = []
  for _ in range(repeats):
    calls, t0 = 0, time.perf_counter()
    while True:
      step()
      calls += 1
      elapsed = time.perf_counter() - t0
      if elapsed >= min_seconds and calls >= 3:
        break
    per_call.append(1000 * elapsed / calls)
  return sorted(per_call)[len(per_call) // 2]


def run_nasq(shapes, batch: int, bits: int, min_seconds: float) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from nasq import models
  from nasq.spaces.macro import space_for_string

  out = {}
  for layer, size, channels in shapes:
    text = layer_string(layer, channels)
    arch = space_for_string(text, (size, size, channels), 10).parse(text)
    model = models.build_model(arch, bits)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, size, size, channels)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch))
    variables = model.init(jax.random.key(0), x[:1], train=False)

    def loss_fn(params, x, batch_stats, model=model, y=y):
      logits, upd = model.apply(
        {"params": params, "batch_stats": batch_stats},
        x,
        train=True,
        mutable=["batch_stats"],
      )
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd

    grad = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
    params, stats = variables["params"], variables.get("batch_stats", {})
    step = lambda grad=grad, params=params, x=x, stats=stats: jax.block_until_ready(
      grad(params, x, stats)
    )
    out[f"{layer}@{size}x{channels}"] = _time(step, min_seconds)
  return out


def run_torch(shapes, batch: int, bits: int, min_seconds: float) -> dict:
  import torch
  import torch.nn.functional as F

  torch.set_num_threads(os.cpu_count() or 1)

  QConv = _torch_qat.quant_conv_class(bits)

  def conv_bn(c_in, c_out, k, s, groups=1):
    return [
      QConv(c_in, c_out, k, s, padding=k // 2, groups=groups, bias=False),
      torch.nn.BatchNorm2d(c_out),
      torch.nn.ReLU(),
    ]

  class Residual(torch.nn.Module):
    def __init__(self, body):
      super().__init__()
      self.body = body

    def forward(self, x):
      return x + self.body(x)

  out = {}
  for layer, size, c in shapes:
    op, stride, *res = layer.split(":")
    s = int(stride[1:])
    if op.startswith("conv"):
      body = conv_bn(c, c, int(op[4:]), s)
    elif op.startswith("dwsep"):
      body = conv_bn(c, c, int(op[5:]), s, groups=c) + conv_bn(c, c, 1, 1)
    elif s == 2:
      body = [torch.nn.MaxPool2d(2) if op == "maxpool" else torch.nn.AvgPool2d(2)]
    elif op == "maxpool":
      body = [torch.nn.MaxPool2d(3, 1, padding=1)]
    else:
      body = [torch.nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)]
    block = torch.nn.Sequential(*body)
    model = torch.nn.Sequential(
      Residual(block) if res else block,
      torch.nn.AdaptiveAvgPool2d(1),
      torch.nn.Flatten(),
      torch.nn.Linear(c, 10),
    ).to(memory_format=torch.channels_last)
    x = torch.randn(batch, c, size, size).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = torch.randint(0, 10, (batch,))

    def step(model=model, x=x, y=y):
      model.zero_grad(set_to_none=True)
      x.grad = None
      F.cross_entropy(model(x), y).backward()

    out[f"{layer}@{size}x{c}"] = _time(step, min_seconds)
  return out


def main(argv):
  del argv
  shapes = [
    (layer, int(size), int(c))
    for size in _SIZES.value
    for c in _CHANNELS.value
    for layer in _LAYERS.value
  ]
  if _VARIANT.value:
    runner = run_torch if _VARIANT.value == "torch-cl" else run_nasq
    result = runner(shapes, _BATCH.value, _BITS.value, _MIN_SECONDS.value)
    print("RESULT " + json.dumps(result))
    return
  common = [
    __file__,
    f"--layers={','.join(_LAYERS.value)}",
    f"--sizes={','.join(_SIZES.value)}",
    f"--channels={','.join(_CHANNELS.value)}",
    f"--batch_size={_BATCH.value}",
    f"--weight_bits={_BITS.value}",
    f"--min_seconds={_MIN_SECONDS.value}",
  ]
  print(
    f"machine: {os.cpu_count()} cores, {_subprocess.cpu_model()}; batch {_BATCH.value}, "
    f"{_BITS.value}-bit weights; ms per forward+backward step, median of 3 repeats",
    flush=True,
  )
  results = {"nasq": _subprocess.run_json([*common, "--variant=nasq"])}
  baseline = ""
  if _BASELINE.value:
    baseline = f"nasq@{_subprocess.commit_of(_BASELINE.value)[:7]}"
    with _subprocess.worktree(_BASELINE.value) as root:
      results[baseline] = _subprocess.run_json([*common, "--variant=nasq"], root)
  results["torch-cl"] = _subprocess.run_json([*common, "--variant=torch-cl"])
  results = {k: v for k, v in results.items() if v is not None}

  cols = [k for k in ("nasq", baseline, "torch-cl") if k in results]
  head = "| layer | input | " + " | ".join(f"{c} (ms)" for c in cols)
  ratios = []
  if "torch-cl" in results and "nasq" in results:
    head += " | nasq vs torch-cl (throughput)"
    ratios.append("torch-cl")
  if baseline in results and "nasq" in results:
    head += f" | speed-up vs {baseline}"
    ratios.append(baseline)
  print(head + " |")
  print("|" + "---|" * (head.count("|")))
  for layer, size, c in shapes:
    key = f"{layer}@{size}x{c}"
    row = [layer_string(layer, c), f"{size}x{size}x{c}"]
    row += [f"{results[col][key]:.1f}" for col in cols]
    row += [f"{results[r][key] / results['nasq'][key]:.2f}x" for r in ratios]
    print("| " + " | ".join(row) + " |")
  for r in ratios:
    vals = sorted(results[r][k] / results["nasq"][k] for k in results["nasq"])
    print(
      f"nasq vs {r}: median {vals[len(vals) // 2]:.2f}x, min {vals[0]:.2f}x, max "
      f"{vals[-1]:.2f}x over {len(vals)} layers"
    )


if __name__ == "__main__":
  app.run(main)
