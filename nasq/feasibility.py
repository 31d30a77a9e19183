"""What a whole space can reach: the smallest value of each cost over every architecture,
and the refusal of budgets no architecture (or too few) can meet, before any search.

Fast: the macro space's params, MACs and size add up layer by layer along its
automaton, so their exact minima are shortest paths through it; for peak memory the
path cost is the largest live set of any layer, a lower bound of the planned arena
(``arena.macro_live_peak_elements``), so a budget below it is surely impossible.
NAS-Bench-201's 15,625 cells are enumerated (exact).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from nasq.arena import head_live_elements, layer_live_elements
from nasq.costs import (
  BUDGET_FIELDS,
  FLOAT_BITS,
  Budget,
  classifier_cost,
  compute_costs,
  macro_units,
)
from nasq.spaces import MacroSpace, SearchSpace


class ImpossibleBudgetError(ValueError):
  """No architecture of the space fits the budget, or fewer than the search needs."""


def minimum_costs(
  space: SearchSpace, weight_bits: int = FLOAT_BITS, activation_bits: int = 8
) -> dict[str, float]:
  """The smallest value each budgeted cost takes over the whole space, each minimized on
  its own, from the space's rules alone (no sampling): exact, except the macro space's
  peak activation memory, a lower bound (no architecture needs less)."""
  if isinstance(space, MacroSpace):
    return dict(_macro_minimum_costs(space, weight_bits, activation_bits))
  summaries = all_costs(space, weight_bits, activation_bits)
  return {f: float(min(c[f] for c in summaries)) for f in BUDGET_FIELDS}


@functools.cache
def _macro_option_costs(
  space: MacroSpace, weight_bits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Costs along the space's automaton: per (state, option), the params, MACs and
  model size bits the option adds [3, S, O] (the classifier charged to the option that
  closes the network) and its largest live set in elements [S, O]; per state, the
  smallest additive costs of any completion [3, S] (each minimized on its own) and the
  smallest largest live set of any completion [S] (a maximum along the path)."""
  a = space.automaton
  additive = np.zeros((3,) + a.option_valid.shape)  # params, MACs, size bits
  peak = np.zeros(a.option_valid.shape)
  last = a.num_blocks - 1
  for s, key in enumerate(a.state_keys):
    if key is None:  # ended: padding costs nothing
      continue
    for o in np.flatnonzero(a.option_valid[s]):
      t = a.options[s, o]
      units, live, out = [], 0, key  # out: the shape after this option
      if t[0] != 0:
        arch = space.decode_layer(t, key)
        out = arch.shapes()[1]
        units.append(macro_units(arch, weight_bits)[0])
        live = layer_live_elements(arch.layers[0], key, out)
      if t[0] == 0 or a.state_block[s] == last:  # this option closes the network
        units.append(classifier_cost(out[2], space.num_classes, weight_bits))
        live = max(live, head_live_elements(out, space.num_classes))
      additive[:, s, o] = (
        sum(u.params for u in units),
        sum(u.macs for u in units),
        sum(u.model_size_bits for u in units),
      )
      peak[s, o] = live
  best_add = np.zeros((3, a.num_states))
  best_peak = np.zeros(a.num_states)
  for b in range(last, -1, -1):
    for s in np.flatnonzero(a.state_block == b):
      ok = np.flatnonzero(a.option_valid[s])
      nxt = a.next_state[s, ok]
      after_add = best_add[:, nxt] if b < last else 0.0
      after_peak = best_peak[nxt] if b < last else 0.0
      best_add[:, s] = (additive[:, s, ok] + after_add).min(axis=1)
      best_peak[s] = np.maximum(peak[s, ok], after_peak).min()
  return additive, peak, best_add, best_peak


@functools.cache
def _macro_minimum_costs(
  space: MacroSpace, weight_bits: int, activation_bits: int
) -> tuple[tuple[str, float], ...]:
  """Shortest paths through the space's automaton: params, MACs and model size add up
  layer by layer; for peak activation memory, the largest live set of a layer (a lower
  bound of the arena, which also holds the image's normalization and is laid out by a
  planner), so its path cost is a maximum."""
  _, _, best_add, best_peak = _macro_option_costs(space, weight_bits)
  start = space.automaton.start
  return (
    ("params", float(best_add[0, start])),
    ("macs", float(best_add[1, start])),
    ("model_size_bits", float(best_add[2, start])),
    ("peak_activation_bytes", float(math.ceil(best_peak[start] * activation_bits / 8))),
  )


def sample_within_budget(
  space: MacroSpace,
  budget: Budget,
  weight_bits: int,
  activation_bits: int,
  rng: np.random.Generator,
  n: int,
) -> np.ndarray:
  """``n`` token vectors drawn through the automaton with every option pruned that can
  no longer be completed within a bound (each additive cost against its smallest
  completion, peak memory against each layer's live set), in proportion to the valid
  completions, as uniform sampling weights them. Made for budgets that a small
  fraction of the space meets, where rejection sampling of the whole space would need
  millions of draws; not exactly uniform over the architectures that fit, and a draw
  may still break a bound jointly (the caller checks exact costs). Rows that reach a
  dead end are drawn again; returns fewer than ``n`` only if many attempts fail."""
  a = space.automaton
  additive, peak, best_add, _ = _macro_option_costs(space, weight_bits)
  fields = ("params", "macs", "model_size_bits")
  bounds = np.array(
    [getattr(budget, f) if getattr(budget, f) is not None else np.inf for f in fields]
  )
  peak_limit = (
    np.inf
    if budget.peak_activation_bytes is None
    else budget.peak_activation_bytes * 8 / activation_bits
  )
  last = a.num_blocks - 1
  out: list[np.ndarray] = []
  for _ in range(20):
    m = max(2 * (n - len(out)), 16)
    state = np.full(m, a.start, dtype=np.int32)
    spent = np.zeros((m, 3))
    alive = np.ones(m, bool)
    tokens = np.zeros((m, a.num_blocks, a.block_size), dtype=np.int32)
    for b in range(a.num_blocks):
      nxt = a.next_state[state]  # [m, O]
      after = best_add[:, nxt] if b < last else np.zeros((3,) + nxt.shape)  # [3, m, O]
      total = spent.T[:, :, None] + additive[:, state] + after
      ok = (total <= bounds[:, None, None]).all(axis=0) & (peak[state] <= peak_limit)
      w = np.where(ok, a.option_weights(state, b), 0.0)
      alive &= w.sum(axis=1) > 0
      w[~alive] = a.option_valid[state[~alive]]  # dead rows: any option, dropped later
      cdf = np.cumsum(w, axis=1)
      u = rng.random(m) * cdf[:, -1]
      choice = np.minimum((cdf <= u[:, None]).sum(axis=1), w.shape[1] - 1)
      tokens[:, b] = a.options[state, choice]
      spent += additive[:, state, choice].T
      state = nxt[np.arange(m), choice]
    out.extend(tokens[alive].reshape(int(alive.sum()), -1))
    if len(out) >= n:
      break
  return np.asarray(out[:n], dtype=np.int32).reshape(-1, a.num_blocks * a.block_size)


@functools.cache
def all_costs(
  space: SearchSpace, weight_bits: int = FLOAT_BITS, activation_bits: int = 8
) -> list[dict[str, int]]:
  """The cost summary of every architecture of an enumerable space (cached per space)."""
  return [
    compute_costs(a, weight_bits, activation_bits).summary()
    for a in space.all_architectures()
  ]


def check_budget(
  space: SearchSpace,
  budget: Budget,
  weight_bits: int,
  activation_bits: int = 8,
  num_needed: int = 1,
) -> None:
  """Refuses, before anything is sampled or trained, a budget that no architecture of
  the space meets (each bound against the smallest value the space can reach), or, for a
  space small enough to enumerate, one that fewer than ``num_needed`` architectures meet.

  Raises:
    ImpossibleBudgetError: naming the budget field and the smallest achievable value.
  """
  smallest = minimum_costs(space, weight_bits, activation_bits)
  for field in BUDGET_FIELDS:
    limit = getattr(budget, field)
    if limit is not None and smallest[field] > limit:
      raise ImpossibleBudgetError(
        f"budget.{field}={limit:g} is below the smallest {field} any architecture "
        f"of the {space.name} space can have ({smallest[field]:g} at {weight_bits}-bit weights, "
        f"{activation_bits}-bit activations): no architecture fits; raise "
        f"budget.{field} to at least {smallest[field]:g} or change the space"
      )
  if hasattr(space, "all_architectures"):
    fits = sum(budget.fits(c) for c in all_costs(space, weight_bits, activation_bits))
    if fits < num_needed:
      raise ImpossibleBudgetError(
        f"only {fits} architectures of the {space.name} space fit the budget "
        f"({'; '.join(f'{f} <= {getattr(budget, f):g}' for f in BUDGET_FIELDS if getattr(budget, f) is not None)}), "
        f"and the search asks for {num_needed} evaluations: loosen the budget or "
        f"lower num_evaluations"
      )
