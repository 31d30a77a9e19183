"""Executors: local and Ray, asynchronous proposals, worker faults, bad input."""

import functools
import json
import os
import signal
import threading
import time

import jax
import numpy as np
import pytest

from nasq import autoencoder as ae_lib
from nasq import benchmarks, evaluators, executors, search, strategies
from nasq.costs import compute_costs
from nasq.history import History
from nasq.spaces import MacroSpace, NB201Space
from tests.test_autoencoder import small_space_config, tiny_config
from tests.test_strategies import cheap_evaluate, make_ctx, objective, run_initial


def table_config(tmp_path, eval_seconds=0.0):
  """A generated table over every NAS-Bench-201 cell: a noisy function of its size."""
  path = tmp_path / "table.csv"
  if not path.exists():
    space, rng = NB201Space(), np.random.default_rng(0)
    lines = ["arch,acc"]
    for arch in space.all_architectures():
      value = np.log(compute_costs(arch).params) + rng.normal(0, 0.1)
      lines.append(f"{arch.to_string()},{value:.6f}")
    path.write_text("\n".join(lines))
  config = benchmarks.default_config()
  config.evaluator, config.table_path, config.metric = "table", str(path), "acc"
  config.eval_seconds = eval_seconds
  return config


def table_objective():
  o = evaluators.default_objective_config()
  o.metric = "acc"
  return o


def run_random(ctx, executor, n, key=0):
  search.run_strategy(
    ctx,
    strategies.RandomSearch(),
    None,
    table_objective(),
    n,
    jax.random.key(key),
    executor=executor,
  )


def nb201_ctx(path):
  return strategies.SearchContext(
    NB201Space(), strategies.Budget(), 32, 8, History.open(path)
  )


def evaluated(history):
  return [r for r in history if r.status in ("ok", "failed")]


# --- local --------------------------------------------------------------------------


def test_local_executor_with_several_workers_keeps_them_busy_and_unique(tmp_path):
  calls = []

  def evaluate(arch, seed):
    calls.append((arch.to_string(), seed))
    return cheap_evaluate(arch, seed)

  ctx = make_ctx(tmp_path, model_size_bits=40_000)
  in_flight = []
  original = strategies.RandomSearch.propose

  def spy(self, ctx, key):
    in_flight.append(len(ctx.pending))
    return original(self, ctx, key)

  executor = executors.LocalExecutor(evaluate, num_workers=3)
  strategies.RandomSearch.propose = spy
  try:
    search.run_strategy(
      ctx,
      strategies.RandomSearch(),
      None,
      objective(),
      10,
      jax.random.key(0),
      executor=executor,
    )
  finally:
    strategies.RandomSearch.propose = original
  records = evaluated(ctx.history)
  assert len(records) == 10 == len(calls)
  assert len({r.tokens for r in records}) == 10
  # Three in flight: each proposal after the first two saw two others pending.
  assert in_flight[:3] == [0, 1, 2] and max(in_flight) == 2
  # Seeds follow submission order; every record's seed is the one it was trained with.
  assert sorted(r.seed for r in records) == list(range(10))
  assert {(r.arch, r.seed) for r in records} == set(calls)


@pytest.fixture(scope="module")
def small_ae():
  return ae_lib.train(MacroSpace(small_space_config()), tiny_config(), progress=False)


def test_latent_bo_kriging_believer_moves_away_from_pending_points(tmp_path, small_ae):
  ctx = make_ctx(tmp_path, small_ae)
  run_initial(ctx, jax.random.key(0), 8)
  config = strategies.default_config()
  config.map_steps, config.num_raw, config.num_starts, config.ascent_steps = 50, 64, 4, 20
  bo = strategies.LatentBO(config, small_ae)
  first = bo.propose(ctx, jax.random.key(1))[0].tokens
  ctx.pending = [first]
  second = bo.propose(ctx, jax.random.key(1))
  assert first not in [p.tokens for p in second]

  # The believer collapses the GP's variance at the pending point's code.
  from nasq import gp

  ok = ctx.history.successful()
  x = np.stack([bo._latent(r.tokens) for r in ok]).astype(np.float32)
  y = np.array([r.objective for r in ok], np.float32)
  xq = bo._latent(first)[None].astype(np.float32)
  xp = np.concatenate([x, xq, np.zeros((16 - len(x) - 1, x.shape[1]), np.float32)])
  mask = np.r_[np.ones(len(x)), np.zeros(16 - len(x))].astype(np.float32)
  ys, _, _ = gp.standardize(np.r_[y, np.zeros(16 - len(y))].astype(np.float32), mask)
  params = gp.fit_map("matern52", xp, ys, jax.random.key(2), mask, steps=50)
  samples = jax.tree.map(lambda v: v[None], params)
  posts = jax.vmap(lambda p: gp.condition("matern52", p, xp, ys, mask))(samples)
  believed = bo._believe_pending(posts, samples, xp, ys, len(x), 1)
  before = jax.vmap(lambda p: gp.predict("matern52", p, xq))(posts)
  after = jax.vmap(lambda p: gp.predict("matern52", p, xq))(believed)
  np.testing.assert_allclose(after[0], before[0], rtol=1e-3, atol=1e-3)  # same mean
  assert float(after[1][0, 0]) < 0.2 * float(before[1][0, 0])


# --- ray ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
  ray = pytest.importorskip("ray")
  ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
  yield ray
  ray.shutdown()


def ray_config(**overrides):
  c = executors.default_config()
  c.kind = "ray"
  c.num_workers = 2
  c.update(overrides)
  return c


def test_search_on_ray_with_two_workers(tmp_path, ray_cluster):
  config = table_config(tmp_path, eval_seconds=0.5)
  factory = functools.partial(benchmarks.make_evaluator, config)
  executor = executors.make_executor(ray_config(), factory=factory)
  ctx = nb201_ctx(tmp_path / "run")
  run_random(ctx, executor, 8)
  records = evaluated(ctx.history)
  assert len(records) == 8 and all(r.status == "ok" for r in records)
  assert len({r.tokens for r in records}) == 8
  assert sorted(r.seed for r in records) == list(range(8))
  # The values are the table's: the workers looked up what the driver proposed.
  table = benchmarks.make_table(config)
  for r in records:
    assert r.metrics["acc"] == table.table[r.arch]["acc"]
    assert r.seconds >= 0.5
  # The history on disk is the same, and a restarted driver evaluates nothing new.
  reopened = History.open(tmp_path / "run")
  assert [r.tokens for r in evaluated(reopened)] == [r.tokens for r in records]
  ctx2 = nb201_ctx(tmp_path / "run")
  run_random(ctx2, executor, 8)
  assert len(ctx2.history) == len(ctx.history)


def _kill_first_evaluation(after_s: float, killed: list[int]) -> None:
  """SIGKILLs the first Ray worker process found running an evaluation."""
  deadline = time.monotonic() + 30
  time.sleep(after_s)
  while time.monotonic() < deadline and not killed:
    for pid in os.listdir("/proc"):
      if not pid.isdigit():
        continue
      try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
          cmd = f.read()
      except OSError:
        continue
      if cmd.startswith(b"ray::nasq_evaluate"):
        os.kill(int(pid), signal.SIGKILL)
        killed.append(int(pid))
        return
    time.sleep(0.05)


@pytest.mark.parametrize("max_retries", [1, 0])
def test_a_killed_worker_is_retried_or_recorded_failed(
  tmp_path, ray_cluster, max_retries
):
  config = table_config(tmp_path, eval_seconds=1.5)
  factory = functools.partial(benchmarks.make_evaluator, config)
  executor = executors.make_executor(ray_config(max_retries=max_retries), factory=factory)
  ctx = nb201_ctx(tmp_path / "run")
  killed: list[int] = []
  thread = threading.Thread(target=_kill_first_evaluation, args=(1.0, killed))
  thread.start()
  run_random(ctx, executor, 6, key=max_retries)
  thread.join()
  assert killed, "no evaluation was running to kill"
  records = evaluated(ctx.history)
  assert len(records) == 6 and len({r.tokens for r in records}) == 6
  failed = [r for r in records if r.status == "failed"]
  if max_retries:
    assert not failed  # the killed evaluation ran again on another worker
  else:
    assert len(failed) == 1 and "WorkerCrashedError" in failed[0].reason
  on_disk = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").open()]
  assert [r["tokens"] for r in on_disk] == [list(r.tokens) for r in ctx.history]


def test_ray_bad_input_is_named(tmp_path, ray_cluster):
  factory = functools.partial(benchmarks.make_evaluator, table_config(tmp_path))
  with pytest.raises(executors.ExecutorError, match="num_workers=3"):
    executors.make_executor(ray_config(num_workers=3), factory=factory)
  with pytest.raises(executors.ExecutorError, match="num_gpus_per_task=1"):
    executors.make_executor(ray_config(num_gpus_per_task=1), factory=factory)
  with pytest.raises(ValueError, match="executor.kind must be one of"):
    executors.make_executor(ray_config(kind="dask"), factory=factory)


def test_unreachable_address_fails_fast_naming_it():
  import socket

  with socket.socket() as s:  # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  start = time.monotonic()
  with pytest.raises(executors.ExecutorError, match=f"127.0.0.1:{port}"):
    executors.make_executor(
      ray_config(address=f"127.0.0.1:{port}", connect_timeout_s=1.0),
      factory=lambda: cheap_evaluate,
    )
  assert time.monotonic() - start < 10
  with pytest.raises(ValueError, match="executor.address must be"):
    executors.wait_for_address("no-port-here", 1.0)


def test_run_search_trains_candidates_on_ray_workers(tmp_path, ray_cluster):
  """The real search with QAT on 2 Ray workers, each loading the data itself."""
  from tests.test_data import fake_fashion_mnist

  fake_fashion_mnist(tmp_path, n_train=300, n_test=50)
  config = search.default_config()
  config.strategy = "random"
  config.num_initial, config.num_evaluations, config.num_final = 2, 4, 1
  config.space.max_layers, config.space.channels = 3, (4, 8)
  config.budget.model_size_bits = 8000
  config.progress = False
  for data in (config.data, config.final_data):
    data.data_dir, data.val_size = str(tmp_path), 100
  for train in (config.train, config.final_train):
    train.epochs, train.batch_size, train.progress = 1, 50, False
  config.executor.kind, config.executor.num_workers = "ray", 2
  summary = search.run_search(config, tmp_path / "search")
  records = evaluated(History.open(tmp_path / "search"))
  assert len(records) == 4 and len({r.tokens for r in records}) == 4
  assert all(r.status == "ok" and r.metrics["val_accuracy"] is not None for r in records)
  assert summary["final"][0]["test_accuracy"] is not None
