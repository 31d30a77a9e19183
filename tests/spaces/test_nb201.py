import numpy as np
import pytest

from nasq.spaces import InvalidArchitectureError, NB201Space, nb201

BEST = (
  "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|"
  "nor_conv_3x3~1|nor_conv_3x3~2|"
)


def test_string_round_trip_and_edge_order():
  space = NB201Space()
  arch = space.parse(BEST)
  assert arch.to_string() == BEST
  # Edges into node 3 are (0->3, 1->3, 2->3): skip, conv3, conv3.
  assert arch.edges()[3] == (0, 3, "skip_connect")
  np.testing.assert_array_equal(space.encode(arch), [3, 3, 3, 1, 3, 3])
  assert space.decode(space.encode(arch)) == arch


def test_all_cells_are_distinct_and_round_trip():
  space = NB201Space()
  archs = space.all_architectures()
  assert len(archs) == space.count() == 15_625
  assert len({a.to_string() for a in archs}) == 15_625
  for a in archs[::97]:
    assert space.parse(a.to_string()) == a


def test_mutation_changes_exactly_one_edge():
  space = NB201Space()
  rng = np.random.default_rng(0)
  for _ in range(100):
    a = space.sample(rng)
    b = space.mutate(a, rng)
    assert int(np.sum(space.encode(a) != space.encode(b))) == 1


@pytest.mark.parametrize(
  "text, match",
  [
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NAS-Bench-201 op"),
    ("|none~0|+|none~0|none~1|", "node groups"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "expected 'op~0'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 inputs"),
  ],
)
def test_bad_strings(text, match):
  with pytest.raises(InvalidArchitectureError, match=match):
    NB201Space().parse(text)


def test_bad_tokens_name_the_position():
  with pytest.raises(InvalidArchitectureError, match="edge 1->2"):
    NB201Space().decode([0, 0, 7, 0, 0, 0])


def test_bad_config():
  with pytest.raises(ValueError, match="space.input_shape"):
    NB201Space(nb201.NB201SpaceConfig(input_shape=(2, 2, 3)))
