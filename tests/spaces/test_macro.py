import dataclasses

import numpy as np
import pytest

from nasq import spaces
from nasq.spaces import InvalidArchitectureError, MacroSpace, MacroSpaceConfig, macro


def independent_validity(space, arch):
  """The validity rules of the module docstring, checked directly on the layers."""
  h, w, c = space.input_shape
  if not space.min_layers <= len(arch.layers) <= space.max_layers:
    return False
  for layer in arch.layers:
    if min(h, w) < layer.stride:
      return False
    h, w = -(-h // layer.stride), -(-w // layer.stride)
    new_c = layer.channels if layer.kind in macro.WEIGHTED_KINDS else c
    if layer.residual and (layer.stride != 1 or new_c != c):
      return False
    c = new_c
  return True


def test_count_matches_brute_force_enumeration(tiny_macro_config, brute_force_valid):
  space = MacroSpace(tiny_macro_config())
  valid = brute_force_valid(space)
  assert space.count() == len(valid)
  archs = [space.decode(t) for t in valid]
  assert len(set(archs)) == len(archs)  # canonical: one token vector per architecture
  assert all(independent_validity(space, a) for a in archs)


def test_sampling_is_uniform_over_valid_architectures(tiny_macro_config):
  space = MacroSpace(tiny_macro_config(residual=False, ops=("conv3",), channels=(4,)))
  n = space.count()
  rng = np.random.default_rng(0)
  draws = 200 * n
  counts = {}
  for _ in range(draws):
    a = space.sample(rng)
    counts[a] = counts.get(a, 0) + 1
  assert len(counts) == n
  freq = np.array(list(counts.values())) / draws
  # Chi-square-style bound: each frequency within 5 standard errors of 1/n.
  assert np.all(np.abs(freq - 1 / n) < 5 * np.sqrt((1 / n) * (1 - 1 / n) / draws))


@pytest.mark.parametrize("mixed", [False, True])
def test_round_trip_and_validity_of_samples(mixed):
  config = MacroSpaceConfig(weight_bits_choices=(2, 4, 8) if mixed else None)
  space = MacroSpace(config)
  rng = np.random.default_rng(1)
  for _ in range(300):
    arch = space.sample(rng)
    tokens = space.encode(arch)
    assert tokens.shape == (space.num_positions,)
    assert space.decode(tokens) == arch
    assert space.parse(arch.to_string()) == arch
    assert independent_validity(space, arch)
    if mixed:
      assert all(
        layer.weight_bits in (2, 4, 8)
        for layer in arch.layers
        if layer.kind in macro.WEIGHTED_KINDS
      )


def test_mutation_gives_a_different_valid_neighbour():
  space = MacroSpace()
  rng = np.random.default_rng(2)
  for _ in range(200):
    arch = space.sample(rng)
    child = space.mutate(arch, rng)
    assert child != arch
    assert space.is_valid(space.encode(child))


def test_strided_layers_never_collapse_resolution(tiny_macro_config, brute_force_valid):
  c = tiny_macro_config(
    ops=("conv3",), channels=(4,), strides=(2,), max_layers=5, residual=False
  )
  space = MacroSpace(c)
  # 4x4 -> 2x2 -> 1x1, then no stride-2 layer fits: at most 2 layers.
  assert {len(space.decode(t).layers) for t in brute_force_valid(space)} == {1, 2}
  with pytest.raises(InvalidArchitectureError, match="not valid"):
    space.parse("conv3:s2:c4 conv3:s2:c4 conv3:s2:c4")


@pytest.mark.parametrize(
  "text, match",
  [
    ("conv9:s1:c8", "unknown layer op 'conv9'.*accepted values"),
    ("conv3:s1", "needs channels"),
    ("conv3:s1:c12", "outside the space"),
    ("conv3:s1:c8:x", "cannot parse 'x'"),
    ("conv3:s2:c8:res", "not valid"),
    ("", "empty"),
    ("conv3:s1:c8:w4", "required in a mixed-precision space and only there"),
  ],
)
def test_bad_strings_get_clear_errors(text, match):
  with pytest.raises(InvalidArchitectureError, match=match):
    MacroSpace().parse(text)


def test_non_canonical_tokens_are_rejected():
  space = MacroSpace()
  tokens = space.encode(space.parse("conv3:s1:c8 maxpool:s2")).copy()
  tokens[6] = 3  # channels of the pooling layer: must be 0 ("keep")
  with pytest.raises(InvalidArchitectureError, match="layer 1 channels"):
    space.decode(tokens)
  tokens = space.encode(space.parse("conv3:s1:c8 maxpool:s2")).copy()
  tokens[-4] = 1  # an op after the end token
  with pytest.raises(InvalidArchitectureError):
    space.decode(tokens)


@pytest.mark.parametrize(
  "field, value, match",
  [
    ("ops", ("conv3", "conv4"), "space.ops"),
    ("channels", (), "space.channels"),
    ("strides", (3,), "space.strides"),
    ("input_shape", (28, 28), "space.input_shape"),
    ("min_layers", 0, "min_layers"),
    ("weight_bits_choices", (1, 4), "weight_bits_choices"),
    ("activation", "tanh", "space.activation"),
  ],
)
def test_bad_config_names_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    MacroSpace(dataclasses.replace(MacroSpaceConfig(), **{field: value}))


def test_reference_networks_parse():
  for name in macro.REFERENCE_NETWORKS:
    arch = macro.reference_architecture(name)
    assert arch.to_string() == macro.REFERENCE_NETWORKS[name][2]
  with pytest.raises(ValueError, match="accepted values"):
    macro.reference_architecture("resnet50")


def test_one_hot_has_one_block_per_position():
  space = MacroSpace(MacroSpaceConfig())
  tokens = space.sample_tokens(np.random.default_rng(0), 5)
  x = spaces.one_hot(tokens, space.vocab_sizes)
  assert x.shape == (5, sum(space.vocab_sizes))
  starts = np.cumsum((0,) + space.vocab_sizes[:-1])
  # Exactly one 1 per block, at the token's own index.
  np.testing.assert_array_equal(x.sum(1), np.full(5, space.num_positions))
  for p, start in enumerate(starts):
    np.testing.assert_array_equal(x[np.arange(5), start + tokens[:, p]], 1.0)
  np.testing.assert_array_equal(spaces.one_hot(tokens[0], space.vocab_sizes), x[:1])
