"""Executors: local and Ray, asynchronous proposals, worker faults, bad input."""

import functools
import json
import os
import signal
import socket
import threading
import time

import jax
import pytest
import ray

from nasq import evaluators, executors, strategies
from nasq.costs import Budget
from nasq.history import History
from nasq.loop import run_strategy
from nasq.runs import compare, search
from nasq.spaces import NB201Space


def run_random(ctx, executor, n, key=0):
  run_strategy(
    ctx,
    strategies.RandomSearch(),
    None,
    evaluators.Objective(metric="acc"),
    n,
    jax.random.key(key),
    executor=executor,
  )


def nb201_ctx(path):
  return strategies.SearchContext(NB201Space(), Budget(), 32, 8, History.open(path))


def evaluated(history):
  return [r for r in history if r.status in ("ok", "failed")]


# --- local --------------------------------------------------------------------------


def test_local_executor_with_several_workers_keeps_them_busy_and_unique(
  make_ctx, cheap_evaluate
):
  calls = []

  def evaluate(arch, seed):
    calls.append((arch.to_string(), seed))
    return cheap_evaluate(arch, seed)

  ctx = make_ctx(model_size_bits=40_000)
  in_flight = []
  original = strategies.RandomSearch.propose

  def spy(self, ctx, key):
    in_flight.append(len(ctx.pending))
    return original(self, ctx, key)

  executor = executors.LocalExecutor(evaluate, num_workers=3)
  strategies.RandomSearch.propose = spy
  try:
    run_strategy(
      ctx,
      strategies.RandomSearch(),
      None,
      evaluators.Objective(),
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


# --- ray ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
  ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
  yield ray
  ray.shutdown()


def ray_config(**overrides):
  return executors.ExecutorConfig(**{"kind": "ray", "num_workers": 2, **overrides})


def test_search_on_ray_with_two_workers(tmp_path, ray_cluster, table_config):
  config = table_config(eval_seconds=0.5)
  factory = functools.partial(compare.make_evaluator, config)
  executor = executors.make_executor(ray_config(), factory=factory)
  ctx = nb201_ctx(tmp_path / "run")
  run_random(ctx, executor, 8)
  records = evaluated(ctx.history)
  assert len(records) == 8 and all(r.status == "ok" for r in records)
  assert len({r.tokens for r in records}) == 8
  assert sorted(r.seed for r in records) == list(range(8))
  # The values are the table's: the workers looked up what the driver proposed.
  table = compare.make_table(config)
  for r in records:
    assert r.metrics["acc"] == table.table[r.arch]["acc"]
    assert r.seconds >= 0.5
  # The history on disk is the same, and a restarted driver evaluates nothing new.
  reopened = History.open(tmp_path / "run")
  assert [r.tokens for r in evaluated(reopened)] == [r.tokens for r in records]
  ctx2 = nb201_ctx(tmp_path / "run")
  run_random(ctx2, executor, 8)
  assert len(ctx2.history) == len(ctx.history)


def _kill_first_evaluation(killed: list[int]) -> None:
  """SIGKILLs the first Ray worker process found running an evaluation: Ray names a
  worker's process after the task it runs (``ray::nasq_evaluate``), so the kill waits
  for that, not for a clock."""
  deadline = time.monotonic() + 60
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
    time.sleep(0.01)


@pytest.mark.parametrize("max_retries", [1, 0])
def test_a_killed_worker_is_retried_or_recorded_failed(
  tmp_path, ray_cluster, table_config, max_retries
):
  config = table_config(eval_seconds=1.5)
  factory = functools.partial(compare.make_evaluator, config)
  executor = executors.make_executor(ray_config(max_retries=max_retries), factory=factory)
  ctx = nb201_ctx(tmp_path / "run")
  killed: list[int] = []
  thread = threading.Thread(target=_kill_first_evaluation, args=(killed,))
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


def test_ray_bad_input_is_named(ray_cluster, table_config):
  factory = functools.partial(compare.make_evaluator, table_config())
  with pytest.raises(executors.ExecutorError, match="num_workers=3"):
    executors.make_executor(ray_config(num_workers=3), factory=factory)
  with pytest.raises(executors.ExecutorError, match="num_gpus_per_task=1"):
    executors.make_executor(ray_config(num_gpus_per_task=1), factory=factory)
  with pytest.raises(ValueError, match="executor.kind must be one of"):
    ray_config(kind="dask")
  with pytest.raises(ValueError, match="executor.num_workers must be >= 1"):
    ray_config(num_workers=0)


def test_unreachable_address_fails_fast_naming_it(cheap_evaluate):
  with socket.socket() as s:  # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  # It gives up at its own timeout (not Ray's, which can block for minutes).
  with pytest.raises(executors.ExecutorError, match=f"127.0.0.1:{port} within 1 s"):
    executors.make_executor(
      ray_config(address=f"127.0.0.1:{port}", connect_timeout_s=1.0),
      factory=lambda: cheap_evaluate,
    )
  with pytest.raises(ValueError, match="executor.address must be"):
    executors.wait_for_address("no-port-here", 1.0)


def test_run_search_trains_candidates_on_ray_workers(
  tmp_path, ray_cluster, fake_fashion_mnist
):
  """The real search with QAT on 2 Ray workers, each loading the data itself."""
  fake_fashion_mnist(tmp_path, n_train=300, n_test=50)
  config = search.default_config()
  config.strategy = "random"
  config.num_initial, config.num_evaluations, config.num_final = 2, 4, 1
  config.space.max_layers, config.space.channels = 3, (4, 8)
  config.budget.model_size_bits = 8000
  config.progress = False
  config.data.data_dir, config.data.val_size = str(tmp_path), 100  # final_data follows
  for train in (config.train, config.final_train):
    train.epochs, train.batch_size, train.progress = 1, 50, False
  config.executor.kind, config.executor.num_workers = "ray", 2
  summary = search.run_search(config, tmp_path / "search")
  records = evaluated(History.open(tmp_path / "search"))
  assert len(records) == 4 and len({r.tokens for r in records}) == 4
  assert all(r.status == "ok" and r.metrics["val_accuracy"] is not None for r in records)
  assert summary["final"][0]["test_accuracy"] is not None
