"""Shared test settings and fixtures: small spaces, a tiny autoencoder, cheap evaluators,
fake datasets, generated benchmark tables."""

import dataclasses
import gzip
import math
import os
import shutil
import struct
import tempfile

# Tests run on the CPU whatever accelerator the machine has.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the whole test run: the xdist workers and
# every entry point a test starts as a subprocess (they inherit this environment) load
# the programs that took another process over a second to compile (JAX's threshold;
# caching every small op-by-op program too cost more than it saved) instead of
# compiling them again. A cached executable is the one XLA would compile, so no result
# changes. A size limit makes JAX take a file lock around each read and write, which the
# concurrent processes need.
_OWN_XLA_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_XLA_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="nasq-tests-xla-")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from nasq import autoencoder as ae_lib  # noqa: E402
from nasq import evaluators, strategies  # noqa: E402
from nasq.costs import Budget, compute_costs  # noqa: E402
from nasq.history import History  # noqa: E402
from nasq.loop import run_strategy  # noqa: E402
from nasq.runs import compare  # noqa: E402
from nasq.spaces import MacroSpace, MacroSpaceConfig, NB201Space  # noqa: E402


def pytest_configure(config):
  """Under pytest-xdist (``-n``, setup.cfg), each worker is pinned to its own core, as
  the benchmark workers are: unpinned, the workers' XLA thread pools fight over the same
  cores and every test runs slower."""
  worker = os.environ.get("PYTEST_XDIST_WORKER", "")
  if worker.startswith("gw") and hasattr(os, "sched_getaffinity"):
    cores = sorted(os.sched_getaffinity(0))
    # What the machine offered, for the tests that pin processes themselves.
    os.environ.setdefault("NASQ_TEST_CORES", ",".join(map(str, cores)))
    if len(cores) > 1:
      os.sched_setaffinity(0, {cores[int(worker[2:]) % len(cores)]})


def pytest_unconfigure(config):
  """The process that made the compilation cache removes it (the xdist controller, or
  the only process without xdist)."""
  if _OWN_XLA_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def machine_cores() -> list[int]:
  """The cores the test run was given (a pinned xdist worker itself sees one)."""
  if os.environ.get("NASQ_TEST_CORES"):
    return [int(c) for c in os.environ["NASQ_TEST_CORES"].split(",")]
  return sorted(os.sched_getaffinity(0))


def pytest_sessionfinish(session, exitstatus):
  """In CI nothing may be skipped: a skipped test is a dependency CI forgot to install."""
  if os.environ.get("CI") != "true":
    return
  reporter = session.config.pluginmanager.get_plugin("terminalreporter")
  skipped = reporter.stats.get("skipped", []) if reporter else []
  if skipped:
    reporter.write_line(
      f"CI: {len(skipped)} test(s) skipped; nothing may be skipped in CI"
    )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


SMALL_SPACE = MacroSpaceConfig(
  input_shape=(8, 8, 1),
  min_layers=1,
  max_layers=4,
  ops=("conv3", "dwsep3", "maxpool"),
  channels=(4, 8),
)

TINY_AE = ae_lib.AutoencoderConfig(
  latent_dim=8,
  embed_dim=16,
  hidden=128,
  predictor_hidden=(16, 16),
  distribution="uniform",  # the small space's shallow nets are few: keep them
  num_train=4000,
  num_holdout=300,
  batch_size=128,
  steps=1000,
  warmup_steps=50,
)


@pytest.fixture(scope="session")
def small_space_config():
  """A macro space of 8x8 images, 1-4 layers, 3 ops, 2 widths (thousands of nets)."""
  return SMALL_SPACE


@pytest.fixture(scope="session")
def tiny_ae_config():
  """``tiny_ae_config(**overrides)``: an autoencoder config that trains in seconds."""
  return lambda **overrides: dataclasses.replace(TINY_AE, **overrides)


@pytest.fixture(scope="session")
def small_ae():
  """The tiny autoencoder trained on the small space, shared by the whole session."""
  return ae_lib.train(MacroSpace(SMALL_SPACE), TINY_AE, progress=False)


def _cheap_evaluate(arch, seed):
  """A smooth function of the architecture's size: best near 2,000 parameters."""
  params = compute_costs(arch).params
  return evaluators.Evaluation(
    "ok", {"val_accuracy": 1.0 - abs(math.log(params / 2000)) / 10}, 0.0
  )


@pytest.fixture(scope="session")
def cheap_evaluate():
  """An evaluator that costs nothing: 1 - |log(params / 2000)| / 10."""
  return _cheap_evaluate


@pytest.fixture
def make_ctx(tmp_path):
  """``make_ctx(ae=None, path=tmp_path, **budget)``: a search context on the small
  space (4-bit weights) with a history under ``path``."""

  def make(ae=None, path=tmp_path, **budget):
    return strategies.SearchContext(
      MacroSpace(SMALL_SPACE),
      Budget(**budget),
      weight_bits=4,
      activation_bits=8,
      history=History.open(path),
      autoencoder=ae,
    )

  return make


@pytest.fixture(scope="session")
def run_initial():
  """``run_initial(ctx, key, n, evaluate=cheap)``: the shared random initial design, as a
  search runs it, on the cheap evaluator unless another is given."""

  def run(ctx, key, n, evaluate=_cheap_evaluate):
    run_strategy(
      ctx,
      strategies.RandomSearch(),
      evaluate,
      evaluators.Objective(),
      n,
      key,
      label="initial",
      count_all=False,
    )

  return run


def _write_idx(path, array, compress):
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  opener = gzip.open if compress else open
  with opener(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def fake_fashion_mnist():
  """``fake_fashion_mnist(path, n_train=60, n_test=20, compress=True)`` writes random
  Fashion-MNIST-shaped IDX files to ``path`` and returns the arrays by split prefix."""

  def write(path, n_train=60, n_test=20, compress=True):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
      images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
      labels = rng.integers(0, 10, n, dtype=np.uint8)
      suffix = ".gz" if compress else ""
      _write_idx(str(path / f"{prefix}-images-idx3-ubyte{suffix}"), images, compress)
      _write_idx(str(path / f"{prefix}-labels-idx1-ubyte{suffix}"), labels, compress)
      arrays[prefix] = (images, labels)
    return arrays

  return write


@pytest.fixture(scope="session")
def nb201_table(tmp_path_factory):
  """A generated table over every NAS-Bench-201 cell, ``acc`` a noisy log(params):
  (path of its CSV, {arch string: acc})."""
  path = tmp_path_factory.mktemp("table") / "table.csv"
  space, rng = NB201Space(), np.random.default_rng(0)
  values, lines = {}, ["arch,acc"]
  for arch in space.all_architectures():
    value = float(np.log(compute_costs(arch).params) + rng.normal(0, 0.1))
    values[arch.to_string()] = value
    lines.append(f"{arch.to_string()},{value!r}")
  path.write_text("\n".join(lines))
  return path, values


@pytest.fixture
def table_config(nb201_table):
  """``table_config(eval_seconds=0.0)``: the comparison config on the generated table."""

  def make(eval_seconds=0.0):
    config = compare.default_config()
    config.evaluator, config.table_path, config.metric = (
      "table",
      str(nb201_table[0]),
      "acc",
    )
    config.eval_seconds = eval_seconds
    return config

  return make
