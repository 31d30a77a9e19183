"""Evaluators and objectives: table lookups (AnalogNAS-Bench, generic CSV/JSON), the
NASWOT proxy, the objective of one evaluation."""

import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasq import evaluators
from nasq.models import build_model, init_variables
from nasq.spaces import MacroSpace, NB201Space, nb201


@pytest.fixture(scope="module")
def analognas():
  return evaluators.load_analognas_bench()


def connected(arch):
  """Whether the cell's output node is reachable from its input through non-none edges."""
  reach = {0}
  for (i, j), op in zip(nb201.EDGES, arch.ops, strict=True):
    if op != "none" and i in reach:
      reach.add(j)
  return 3 in reach


def test_analognas_bench_loads_every_cell_with_the_verified_edge_order(analognas):
  space = NB201Space()
  assert len(analognas) == 15_625
  assert {a.to_string() for a in space.all_architectures()} == set(analognas)
  all_none = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
  all_conv = all_none.replace("none", "nor_conv_3x3")
  assert analognas[all_none]["baseline_accuracy"] == pytest.approx(10.0)
  assert analognas[all_conv]["baseline_accuracy"] > 90.0
  # The key-position order matters exactly where edges 1->2 and 0->3 differ: with it,
  # every cell with a disconnected output is at chance and every other one well above.
  acc = {k: v["baseline_accuracy"] for k, v in analognas.items()}
  dis = [acc[k] for k in acc if not connected(space.parse(k))]
  con = [acc[k] for k in acc if connected(space.parse(k))]
  assert len(dis) == 341 and max(dis) <= 10.01 and min(con) > 30.0


def test_the_identity_order_would_fail_that_check(analognas):
  swapped = {}
  for key_string, row in analognas.items():
    ops = list(NB201Space().parse(key_string).ops)
    ops[2], ops[3] = ops[3], ops[2]  # undo the (0, 1, 3, 2, 4, 5) order
    swapped[nb201.NB201Architecture(tuple(ops)).to_string()] = row["baseline_accuracy"]
  dis = [v for k, v in swapped.items() if not connected(NB201Space().parse(k))]
  assert max(dis) > 80.0


def test_restricted_unpickler_refuses_other_globals(tmp_path):
  marker = tmp_path / "pwned"

  class Evil:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  path = tmp_path / "data.anb"
  path.write_bytes(pickle.dumps({(0,) * 6: Evil()}))
  with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
    evaluators.load_analognas_bench(str(path))
  assert not marker.exists()  # the payload never ran


def small_table():
  space = NB201Space()
  rng = np.random.default_rng(0)
  archs = [space.sample(rng) for _ in range(20)]
  return space, {
    a.to_string(): {"acc": float(i), "lat": 2.0 * i} for i, a in enumerate(archs)
  }


@pytest.mark.parametrize("fmt", ["csv", "json", "json_list"])
def test_generic_table_from_files(tmp_path, fmt):
  space, table = small_table()
  if fmt == "csv":
    path = tmp_path / "t.csv"
    lines = ["arch,acc,lat"] + [f"{k},{v['acc']},{v['lat']}" for k, v in table.items()]
    path.write_text("\n".join(lines))
  elif fmt == "json":
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))
  else:
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"arch": k, **v} for k, v in table.items()]))
  ev = evaluators.TableEvaluator.from_file(str(path), "lat", space)
  for k, v in table.items():
    result = ev(space.parse(k))
    assert result.status == "ok" and result.metrics == {"lat": v["lat"]}
  assert ev.best() == max(((k, v["lat"]) for k, v in table.items()), key=lambda kv: kv[1])
  missing = next(a for a in space.all_architectures() if a.to_string() not in table)
  assert ev(missing).status == "failed"


def test_table_errors_are_named(tmp_path):
  space, table = small_table()
  with pytest.raises(ValueError, match=r"table metric must be one of \['acc', 'lat'\]"):
    evaluators.TableEvaluator(table, "top1", space)
  (tmp_path / "t.txt").write_text("x")
  with pytest.raises(ValueError, match=".csv or .json"):
    evaluators.TableEvaluator.from_file(str(tmp_path / "t.txt"), "acc", space)


def test_naswot_is_finite_deterministic_and_order_invariant(small_space_config):
  space = MacroSpace(small_space_config)
  arch = space.sample(np.random.default_rng(3))
  images = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32)
  model = build_model(arch)
  variables = init_variables(model, images.shape[1:], jax.random.key(0))
  a = evaluators.naswot_score(model, variables, jnp.asarray(images))
  b = evaluators.naswot_score(model, variables, jnp.asarray(images[::-1]))
  assert np.isfinite(a) and a == pytest.approx(b, rel=1e-4)
  # Identical images share every code: the kernel is singular.
  same = np.repeat(images[:1], 16, axis=0)
  assert evaluators.naswot_score(model, variables, jnp.asarray(same)) == float("-inf")


def test_objectives():
  costs = {"params": 1e4, "macs": 1e6}
  cost = evaluators.Objective(kind="cost")
  assert cost.value({"val_accuracy": 0.9}, costs) == pytest.approx(
    0.9 - 0.01 * 4 - 0.01 * 6
  )
  plain = evaluators.Objective()
  assert plain.value({"val_accuracy": 0.9}, costs) == 0.9
  assert plain.value({"val_accuracy": float("nan")}, costs) is None
  assert plain.value({"train_loss": 0.1}, costs) is None
  with pytest.raises(ValueError, match="objective.kind must be one of"):
    evaluators.Objective(kind="accuracy")


def test_fixed_cost_evaluator_takes_its_time(cheap_evaluate, small_space_config):
  arch = MacroSpace(small_space_config).sample(np.random.default_rng(0))
  slow = evaluators.FixedCostEvaluator(cheap_evaluate, 0.2)
  result = slow(arch, 0)
  assert result.seconds >= 0.2 and result.metrics == cheap_evaluate(arch, 0).metrics
  with pytest.raises(ValueError, match="eval_seconds must be >= 0"):
    evaluators.FixedCostEvaluator(cheap_evaluate, -1.0)
