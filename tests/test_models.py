import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasq import costs, models, quant
from nasq.spaces import MacroSpace, NB201Space, macro


def test_batchnorm_matches_flax():
  x = jax.random.normal(jax.random.key(0), (8, 5, 5, 6)) * 3 + 1
  ours, ref = models.BatchNorm(), nn.BatchNorm(momentum=0.9, epsilon=1e-5)
  v = ref.init(jax.random.key(1), x, use_running_average=False)
  y_ref, upd_ref = ref.apply(v, x, use_running_average=False, mutable=["batch_stats"])
  y, upd = ours.apply(v, x, mutable=["batch_stats"])
  np.testing.assert_allclose(y, y_ref, atol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), upd, upd_ref)
  g_ref = jax.grad(
    lambda x: jnp.sum(
      jnp.sin(ref.apply(v, x, use_running_average=False, mutable=["batch_stats"])[0])
    )
  )(x)
  g = jax.grad(lambda x: jnp.sum(jnp.sin(ours.apply(v, x, mutable=["batch_stats"])[0])))(
    x
  )
  np.testing.assert_allclose(g, g_ref, atol=2e-5)
  y_eval = models.BatchNorm(use_running_average=True).apply(v, x)
  np.testing.assert_allclose(y_eval, ref.apply(v, x, use_running_average=True), atol=1e-5)


@pytest.mark.parametrize(
  "kind, window, stride, shape",
  [
    ("max", 2, 2, (2, 6, 6, 3)),
    ("avg", 2, 2, (2, 6, 6, 3)),
    ("max", 2, 2, (2, 7, 5, 3)),
    ("avg", 2, 2, (2, 7, 5, 3)),
    ("max", 3, 1, (2, 5, 5, 3)),
    ("avg", 3, 1, (2, 5, 5, 3)),
  ],
)
def test_pooling_matches_flax(kind, window, stride, shape):
  x = jax.random.normal(jax.random.key(0), shape)
  if kind == "max":
    ref = nn.max_pool(x, (window, window), (stride, stride), "SAME")
  else:
    ref = nn.avg_pool(
      x, (window, window), (stride, stride), "SAME", count_include_pad=False
    )
  np.testing.assert_allclose(models.pool(x, kind, window, stride), ref, atol=1e-6)


@pytest.mark.parametrize("space", [MacroSpace(), NB201Space()], ids=["macro", "nb201"])
def test_eval_mode_is_per_example_and_train_mode_updates_statistics(space):
  rng = np.random.default_rng(0)
  for _ in range(2):
    arch = space.sample(rng)
    model = models.build_model(arch, 4)
    v = models.init_variables(model, arch.input_shape, jax.random.key(0))
    x = 2.0 + jax.random.normal(jax.random.key(1), (4, *arch.input_shape))
    # Compiled (op by op, every new shape of every operation compiles on its own).
    infer = jax.jit(model.apply)
    logits = infer(v, x)
    assert logits.shape == (4, arch.num_classes) and np.all(np.isfinite(logits))
    # Inference uses running statistics: an example's logits do not depend on the rest
    # of the batch (to float32 rounding: untrained cells' logits reach 1e5).
    np.testing.assert_allclose(infer(v, x[::-1]), logits[::-1], 1e-5, 1e-4)
    np.testing.assert_allclose(infer(v, x[1:2]), logits[1:2], 1e-5, 1e-4)
    # Training uses batch statistics and moves the running ones towards them.
    train_apply = jax.jit(
      functools.partial(model.apply, train=True, mutable=["batch_stats"])
    )
    train_logits, upd = train_apply(v, x)
    assert np.all(np.isfinite(train_logits))
    moved = jax.tree.map(
      lambda a, b: bool(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-6),
      upd["batch_stats"],
      v["batch_stats"],
    )
    assert any(jax.tree.leaves(moved))
    assert infer({**v, **upd}, x).shape == logits.shape


@pytest.mark.parametrize("mixed", [False, True])
def test_integer_weights_reproduce_the_quantized_model(mixed):
  """A float model loaded with codes * scale computes what the QAT model computes."""
  config = macro.MacroSpaceConfig(weight_bits_choices=(2, 4, 8) if mixed else None)
  arch = MacroSpace(config).sample(np.random.default_rng(3))
  qmodel = models.build_model(arch, 4)
  v = models.init_variables(qmodel, arch.input_shape, jax.random.key(0))
  bits = costs.kernel_modules_bits(arch, 4)
  ints = quant.extract_integer_weights(v["params"], bits)
  assert set(ints) == {m for m, b in bits.items() if b < 32}
  deq = jax.tree_util.tree_map_with_path(
    lambda path, p: (
      jnp.asarray(
        ints["/".join(k.key for k in path[:-1])].codes
        * ints["/".join(k.key for k in path[:-1])].scale,
        jnp.float32,
      )
      if path[-1].key == "kernel"
      else p
    ),
    v["params"],
  )
  for name, iw in ints.items():
    qmax = 2 ** (iw.bits - 1) - 1
    assert iw.codes.dtype == np.int8 and np.abs(iw.codes).max() <= qmax
    assert iw.bits == bits[name]
  x = jax.random.normal(jax.random.key(1), (4, *arch.input_shape))
  float_arch = macro.MacroArchitecture(
    tuple(macro.Layer(la.op, la.stride, la.channels, la.residual) for la in arch.layers),
    arch.input_shape,
    arch.num_classes,
  )
  float_out = jax.jit(models.build_model(float_arch, 32).apply)(
    {"params": deq, "batch_stats": v["batch_stats"]}, x
  )
  np.testing.assert_allclose(jax.jit(qmodel.apply)(v, x), float_out, rtol=1e-4, atol=1e-4)


def test_build_model_rejects_bad_input():
  arch = macro.reference_architecture("fmnist_ref")
  with pytest.raises(ValueError, match="weight_bits"):
    models.build_model(arch, 12)
  with pytest.raises(TypeError, match="no model"):
    models.build_model("conv3", 4)
