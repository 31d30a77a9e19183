"""The block automaton against brute-force enumeration of the token rules."""

import collections

import numpy as np
import pytest
from scipy import stats

from nasq.spaces import InvalidArchitectureError, MacroSpace, NB201Space


def enumerate_automaton(a):
  """Every token vector the automaton spells, by walking all paths."""
  out = []

  def walk(state, block, prefix):
    if block == a.num_blocks:
      out.append(tuple(prefix))
      return
    for o in np.flatnonzero(a.option_valid[state]):
      walk(a.next_state[state, o], block + 1, prefix + a.options[state, o].tolist())

  walk(a.start, 0, [])
  return out


@pytest.mark.parametrize(
  "overrides",
  [
    {},
    {"residual": False},
    {"min_layers": 2},
    {"weight_bits_choices": (4, 8), "max_layers": 2},
  ],
)
def test_automaton_spells_exactly_the_valid_token_vectors(
  tiny_macro_config, brute_force_valid, overrides
):
  space = MacroSpace(tiny_macro_config(**overrides))
  spelled = enumerate_automaton(space.automaton)
  assert sorted(spelled) == sorted(brute_force_valid(space))
  assert space.automaton.completions[space.automaton.start] == len(spelled)


def test_automaton_counts_the_default_space():
  space = MacroSpace()
  assert int(space.automaton.completions[space.automaton.start]) == pytest.approx(
    space.count(), rel=1e-12
  )
  nb = NB201Space()
  assert len(enumerate_automaton(nb.automaton)) == nb.count() == 15_625


def test_vectorized_sampling_is_uniform(tiny_macro_config, brute_force_valid):
  space = MacroSpace(tiny_macro_config(residual=False))
  valid = brute_force_valid(space)
  tokens = space.sample_tokens(np.random.default_rng(0), 100 * len(valid))
  counts = collections.Counter(map(tuple, tokens.tolist()))
  assert set(counts) == set(valid)
  observed = np.array([counts[t] for t in valid])
  assert stats.chisquare(observed).pvalue > 1e-3


def test_depth_uniform_sampling(tiny_macro_config, brute_force_valid):
  space = MacroSpace(tiny_macro_config(residual=False))
  tokens = space.sample_tokens(np.random.default_rng(0), 30_000, "depth_uniform")
  assert all(space.is_valid(t) for t in tokens[:500])
  depth = (tokens.reshape(len(tokens), -1, space.fields_per_layer)[:, :, 0] != 0).sum(1)
  per_depth = np.bincount(depth, minlength=4)[1:]
  assert stats.chisquare(per_depth).pvalue > 1e-3
  # Within one depth, uniform over the architectures of that depth.
  deepest = [tuple(t) for t in tokens[depth == 3].tolist()]
  valid3 = [t for t in brute_force_valid(space) if t[3 * space.fields_per_layer - 4] != 0]
  counts = collections.Counter(deepest)
  assert set(counts) == set(valid3)
  assert stats.chisquare([counts[t] for t in valid3]).pvalue > 1e-3


def test_default_space_samples_are_valid_and_paths_agree():
  space = MacroSpace()
  rng = np.random.default_rng(1)
  for distribution in ("uniform", "depth_uniform"):
    tokens, states, choices = space.sample_tokens(rng, 300, distribution, True)
    assert all(space.is_valid(t) for t in tokens)
    s2, c2 = space.automaton.path(tokens)
    np.testing.assert_array_equal(states, s2)
    np.testing.assert_array_equal(choices, c2)


def test_path_rejects_invalid_tokens():
  space = MacroSpace()
  tokens = space.sample_tokens(np.random.default_rng(2), 3)
  tokens[1, 0] = 0  # a network that ends before min_layers
  with pytest.raises(InvalidArchitectureError, match="token vector 1"):
    space.automaton.path(tokens)
  with pytest.raises(InvalidArchitectureError):
    space.decode_many(tokens)


def test_bad_distribution_is_named():
  with pytest.raises(ValueError, match="distribution must be one of"):
    MacroSpace().sample_tokens(np.random.default_rng(0), 2, "gaussian")
