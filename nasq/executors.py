"""Where candidate evaluations run: in this process, or as tasks on a Ray cluster.

The search loop (``nasq.loop.run_strategy``) keeps up to ``num_workers`` evaluations in
flight: it submits one per free worker, waits for the first to finish, records it, and
proposes the next. An executor only runs evaluations; the history is written by the
driver alone, as results arrive.

* ``local`` (the default): evaluations run in this process. With one worker the loop is
  exactly the sequential search. With ``num_workers = k > 1`` the evaluations still run
  one at a time (oldest first), but the strategy always proposes with ``k - 1`` others
  pending: this simulates k equal workers, for measuring batch/asynchronous BO.
* ``ray``: each evaluation is a Ray task with ``num_cpus_per_task``/``num_gpus_per_task``
  resources. The evaluator is built once per worker process from a picklable factory
  (for a training evaluator this loads the dataset on the worker). A task whose worker
  process dies is retried ``max_retries`` times by Ray, then recorded ``failed``.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import socket
import time
import uuid
from collections.abc import Callable, Hashable
from typing import Any, Protocol, runtime_checkable

from nasq.evaluators import Evaluation, Evaluator
from nasq.spaces import Architecture

EXECUTORS = ("local", "ray")

# Evaluators built on this worker process, by executor id (Ray reuses worker processes).
_WORKER_EVALUATORS: dict[str, Any] = {}


class ExecutorError(RuntimeError):
  """The executor cannot run: cluster unreachable, or too few resources."""


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
  """Where evaluations run (the ``executor`` section)."""

  kind: str = "local"  # "local" (this process) or "ray".
  # Evaluations in flight. local: >1 simulates that many workers (sequential runs).
  num_workers: int = 1
  # Ray cluster: None starts a local one on this machine; "auto" joins the cluster this
  # machine belongs to; "host:port" (GCS) or "ray://host:10001" (Ray client) connects.
  address: str | None = None
  num_cpus_per_task: float = 1.0  # Resources of each evaluation task.
  num_gpus_per_task: float = 0.0
  max_retries: int = 2  # Retries of a task whose worker died, before recording it failed.
  connect_timeout_s: float = 30.0  # Bounded wait for the cluster at `address`.

  def __post_init__(self):
    if self.kind not in EXECUTORS:
      raise ValueError(
        f"executor.kind must be one of {list(EXECUTORS)}, got {self.kind!r}"
      )
    if int(self.num_workers) < 1:
      raise ValueError(f"executor.num_workers must be >= 1, got {self.num_workers}")
    if float(self.num_cpus_per_task) < 0 or float(self.num_gpus_per_task) < 0:
      raise ValueError(
        "executor.num_cpus_per_task and executor.num_gpus_per_task must be >= 0, got "
        f"{self.num_cpus_per_task} and {self.num_gpus_per_task}"
      )
    if int(self.max_retries) < 0:
      raise ValueError(f"executor.max_retries must be >= 0, got {self.max_retries}")
    if float(self.connect_timeout_s) <= 0:
      raise ValueError(
        f"executor.connect_timeout_s must be > 0, got {self.connect_timeout_s}"
      )


@runtime_checkable
class Executor(Protocol):
  """Runs evaluations; the search loop keeps ``num_workers`` of them in flight."""

  num_workers: int

  def submit(self, arch: Architecture, seed: int) -> Hashable:
    """Starts evaluating ``arch``; returns a handle."""
    ...

  def wait_any(self, handles: list[Hashable]) -> list[tuple[Hashable, Evaluation]]:
    """Blocks until at least one of ``handles`` finishes; returns the finished ones."""
    ...

  def close(self) -> None: ...


@dataclasses.dataclass
class _Task:
  arch: Architecture
  seed: int


class LocalExecutor:
  """Runs evaluations in this process, oldest first, when the loop waits for one."""

  kind = "local"

  def __init__(self, evaluate: Evaluator, num_workers: int = 1):
    if int(num_workers) < 1:
      raise ValueError(f"executor.num_workers must be >= 1, got {num_workers}")
    self.evaluate = evaluate
    self.num_workers = int(num_workers)
    self._queue: collections.OrderedDict[int, _Task] = collections.OrderedDict()
    self._ids = itertools.count()

  def submit(self, arch: Architecture, seed: int) -> int:
    handle = next(self._ids)
    self._queue[handle] = _Task(arch, seed)
    return handle

  def wait_any(self, handles: list[int]) -> list[tuple[int, Evaluation]]:
    """Runs the oldest of ``handles`` and returns it with its evaluation."""
    handle = min(handles)
    task = self._queue.pop(handle)
    return [(handle, self.evaluate(task.arch, task.seed))]

  def close(self) -> None:
    self._queue.clear()


def _parse_address(address: str) -> tuple[str, int]:
  rest = address.split("://", 1)[-1]
  host, _, port = rest.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(
      f"executor.address must be None, 'auto', 'host:port' or 'ray://host:port', got "
      f"{address!r}"
    )
  return host, int(port)


def wait_for_address(address: str, timeout_s: float) -> None:
  """Returns once a TCP connection to ``address`` succeeds; raises ``ExecutorError``
  naming it after ``timeout_s`` (Ray's own connection attempts can block for minutes)."""
  host, port = _parse_address(address)
  deadline = time.monotonic() + timeout_s
  last: Exception | None = None
  while True:
    left = deadline - time.monotonic()
    if left <= 0:
      raise ExecutorError(
        f"executor.address {address!r}: no Ray cluster answered at {host}:{port} within "
        f"{timeout_s:g} s ({last}); start one with `ray start --head` or fix the address"
      )
    try:
      with socket.create_connection((host, port), timeout=min(left, 2.0)):
        return
    except OSError as e:
      last = e
      time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


def _evaluate_on_worker(
  executor_id: str, factory: Callable[[], Evaluator], arch: Architecture, seed: int
) -> Evaluation:
  evaluate = _WORKER_EVALUATORS.get(executor_id)
  if evaluate is None:
    evaluate = _WORKER_EVALUATORS[executor_id] = factory()
  result = evaluate(arch, seed)
  result.variables = None  # results travel back to the driver; weights stay
  return result


class RayExecutor:
  """Evaluations as Ray tasks on a local or remote cluster (module docstring)."""

  kind = "ray"

  def __init__(
    self,
    factory: Callable[[], Evaluator],
    config: ExecutorConfig,
  ):
    import ray

    self.config = config
    self.num_workers = int(config.num_workers)
    self._started_here = False
    address = config.address
    if address not in (None, "", "local", "auto"):
      wait_for_address(address, float(config.connect_timeout_s))
    if not ray.is_initialized():  # else: the cluster this process is connected to
      kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=True)
      if address in (None, "", "local"):
        ray.init(**kwargs)
      else:
        try:
          ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError) as e:
          raise ExecutorError(f"executor.address {address!r}: {e}") from e
      self._started_here = True
    self._check_resources(ray)
    options: dict[str, Any] = dict(
      num_cpus=float(config.num_cpus_per_task),
      num_gpus=float(config.num_gpus_per_task),
      max_retries=int(config.max_retries),
      retry_exceptions=False,  # an evaluator's own exception is a bug, not a fault
    )
    if float(config.num_gpus_per_task) > 0:
      # Several JAX processes may share a GPU: do not let each reserve 75% of it.
      options["runtime_env"] = {"env_vars": {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}}
    self._remote = ray.remote(_evaluate_on_worker).options(
      name="nasq_evaluate", **options
    )
    self._id = uuid.uuid4().hex
    self._factory_ref = ray.put(factory)
    self._ray = ray

  def _check_resources(self, ray) -> None:
    c = self.config
    total = ray.cluster_resources()
    for field, resource in (("num_cpus_per_task", "CPU"), ("num_gpus_per_task", "GPU")):
      per_task = float(getattr(c, field))
      if per_task <= 0:
        continue
      have = float(total.get(resource, 0.0))
      if per_task > max(
        (float(n["Resources"].get(resource, 0)) for n in ray.nodes() if n["Alive"]),
        default=0.0,
      ):
        raise ExecutorError(
          f"executor.{field}={per_task:g}: no node of the Ray cluster has that many "
          f"{resource}s (cluster total {have:g}); the tasks could never start"
        )
      if self.num_workers * per_task > have + 1e-9:
        raise ExecutorError(
          f"executor.num_workers={self.num_workers} x executor.{field}={per_task:g} "
          f"needs {self.num_workers * per_task:g} {resource}s, the Ray cluster has "
          f"{have:g}; lower num_workers (at most {int(have // per_task)})"
        )

  def submit(self, arch: Architecture, seed: int) -> Hashable:
    return self._remote.remote(self._id, self._factory_ref, arch, seed)

  def wait_any(self, handles: list[Hashable]) -> list[tuple[Hashable, Evaluation]]:
    """Blocks until at least one task finishes; returns every finished one."""
    ray = self._ray
    done, _ = ray.wait(list(handles), num_returns=1)
    done, _ = ray.wait(list(handles), num_returns=len(handles), timeout=0)
    out = []
    for ref in done:
      start = time.perf_counter()
      try:
        result = ray.get(ref)
      except ray.exceptions.RayTaskError as e:
        # The evaluator raised: a configuration error, as in the local executor.
        raise e.as_instanceof_cause() from None
      except (
        ray.exceptions.WorkerCrashedError,
        ray.exceptions.NodeDiedError,
        ray.exceptions.OutOfMemoryError,
        ray.exceptions.TaskCancelledError,
        ray.exceptions.ObjectLostError,
      ) as e:
        reason = (
          f"{type(e).__name__} after {self.config.max_retries} retries: "
          f"{str(e).splitlines()[0] if str(e) else ''}"
        )
        result = Evaluation("failed", {}, time.perf_counter() - start, reason[:2000])
      out.append((ref, result))
    return out

  def close(self) -> None:
    if self._started_here:
      self._ray.shutdown()


def make_executor(
  config: ExecutorConfig,
  evaluate: Evaluator | None = None,
  factory: Callable[[], Evaluator] | None = None,
) -> Executor:
  """``local`` runs ``evaluate`` (built from ``factory`` if not given); ``ray`` ships the
  picklable ``factory`` to its workers, each building its own evaluator once."""
  if config.kind == "local":
    if evaluate is None:
      if factory is None:
        raise ValueError("a local executor needs an evaluator or a factory")
      evaluate = factory()
    return LocalExecutor(evaluate, int(config.num_workers))
  if factory is None:
    raise ValueError("executor.kind 'ray' needs a picklable evaluator factory")
  return RayExecutor(factory, config)


__all__ = [
  "EXECUTORS",
  "ExecutorError",
  "LocalExecutor",
  "Executor",
  "ExecutorConfig",
  "RayExecutor",
  "make_executor",
  "wait_for_address",
]
