"""What a space can reach: minimum costs against enumeration, refused budgets."""

import numpy as np
import pytest

from nasq import arena, costs, feasibility
from nasq.spaces import MacroSpace, NB201Space, macro


def valid_by_search(space, prefix=()):
  """Every valid token vector, by depth-first search over ``valid_mask``."""
  if len(prefix) == space.num_positions:
    return [prefix]
  return [
    t
    for v in np.flatnonzero(space.valid_mask(prefix))
    for t in valid_by_search(space, prefix + (int(v),))
  ]


@pytest.mark.parametrize(
  "config",
  [
    macro.MacroSpaceConfig(
      input_shape=(6, 6, 1),
      min_layers=1,
      max_layers=3,
      channels=(4, 8),
      ops=("conv3", "dwsep3", "maxpool"),
    ),
    macro.MacroSpaceConfig(
      input_shape=(6, 6, 2),
      min_layers=2,
      max_layers=3,
      channels=(4, 8),
      ops=("conv1", "dwsep3", "avgpool"),
      weight_bits_choices=(2, 8),
    ),
  ],
  ids=["uniform-bits", "mixed-precision"],
)
def test_minimum_costs_against_brute_force(config):
  """The automaton's shortest paths equal the minimum over every architecture."""
  space = MacroSpace(config)
  every = [space.decode(t) for t in valid_by_search(space)]
  for bits, act in ((4, 8), (32, 16)):
    summaries = [costs.compute_costs(a, bits, act).summary() for a in every]
    got = feasibility.minimum_costs(space, bits, act)
    exact = ("params", "macs", "model_size_bits")
    assert {f: got[f] for f in exact} == {f: min(s[f] for s in summaries) for f in exact}
    # Peak memory: the smallest largest-live-set, a lower bound of the planned arena.
    live = min(arena.macro_live_peak_elements(a) * act // 8 for a in every)
    assert got["peak_activation_bytes"] == live
    assert live <= min(s["peak_activation_bytes"] for s in summaries)


def test_impossible_budgets_are_refused_naming_the_smallest_value():
  space = MacroSpace()
  smallest = feasibility.minimum_costs(space, 4, 8)
  with pytest.raises(
    feasibility.ImpossibleBudgetError, match="budget.model_size_bits=100 .*680"
  ):
    feasibility.check_budget(space, costs.Budget(model_size_bits=100), 4)
  assert smallest["model_size_bits"] == 680
  limit = smallest["peak_activation_bytes"] - 1
  with pytest.raises(
    feasibility.ImpossibleBudgetError, match="budget.peak_activation_bytes"
  ):
    feasibility.check_budget(space, costs.Budget(peak_activation_bytes=limit), 4)
  feasibility.check_budget(
    space, costs.Budget(model_size_bits=680), 4
  )  # exactly reachable


def test_a_budget_too_tight_for_the_search_is_counted_on_nb201():
  space = NB201Space()
  params = sorted(costs.compute_costs(a).params for a in space.all_architectures())
  budget = costs.Budget(params=params[9])  # the 10 smallest cells, and their ties
  fits = sum(p <= params[9] for p in params)
  feasibility.check_budget(space, budget, 32, num_needed=fits)
  with pytest.raises(
    feasibility.ImpossibleBudgetError, match=f"only {fits} architectures"
  ):
    feasibility.check_budget(space, budget, 32, num_needed=fits + 1)
