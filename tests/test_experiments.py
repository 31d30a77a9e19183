"""The entry points, run as a user runs them, on shrunken configs."""

import ast
import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from nasq import checkpoints, costs, data, export, models
from nasq.runs import autoencoder as ae_run
from nasq.runs import export as export_run
from nasq.runs import final as final_lib
from nasq.runs import retrain as retrain_lib
from nasq.runs import search as search_lib
from nasq.runs.config import ConfigError, sibling_config
from nasq.runs.train import resolve_architecture

EXPORT_EXTRA = "needs the export extra: pip install -e .[export]"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_entry_point(tmp_path, fake_fashion_mnist):
  fake_fashion_mnist(tmp_path, n_train=300, n_test=50)
  workdir = tmp_path / "work"
  cmd = [
    sys.executable,
    "experiments/train.py",
    "--config=configs/train.py",
    f"--workdir={workdir}",
    f"--config.data.data_dir={tmp_path}",
    "--config.data.val_size=100",
    "--config.train.epochs=2",
    "--config.train.batch_size=50",
    "--config.train.progress=False",
    "--config.arch=conv3:s2:c8:w8 maxpool:s2 dwsep3:s1:c16:w4 conv1:s1:c8:w2",
    "--config.space.weight_bits_choices=(2, 4, 8)",
    "--config.integer_qat=True",  # 8-bit activations with learned ranges
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((workdir / "result.json").read_text())
  assert result["status"] == "ok" and result["epochs_completed"] == 2
  assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 2
  assert "| layer2 | dwsep3 |" in (workdir / "costs.md").read_text()
  config = json.loads((workdir / "config.json").read_text())
  assert config["arch"].startswith("conv3")
  # The checkpoint restores the trained model: it scores the validation split exactly
  # as the run reported.
  arch = resolve_architecture(ml_collections.ConfigDict(config), (28, 28, 1), 10)
  model = models.build_model(arch, 4, integer_qat=True)
  template = models.init_variables(model, arch.input_shape, jax.random.key(1))
  variables = checkpoints.load_checkpoint(str(workdir / "checkpoint"), template)
  ds = data.load_dataset(data.DataConfig(data_dir=str(tmp_path), val_size=100))
  images = (ds.val.images.astype(np.float32) / 255.0 - ds.mean) / ds.std
  logits = model.apply(variables, images)
  accuracy = float(np.mean(np.argmax(logits, -1) == ds.val.labels))
  assert accuracy == pytest.approx(result["val_accuracy"], abs=1e-6)

  # A trained (mixed-precision) network exports from its workdir too.
  export_cmd = [sys.executable, "experiments/export.py", f"--workdir={workdir}"]
  proc = subprocess.run(export_cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # It says what to do with the files on a device: the resolver and the arena.
  assert (
    "resolver.AddConv2D();" in proc.stdout and "tensor arena: at least" in proc.stdout
  )
  for name in ("model.tflite", "model.onnx", "model_data.cc", "model_data.h"):
    assert (workdir / "export" / name).stat().st_size > 0, name
  # Its 4-bit layer is packed in the int4 model; the 8-bit one stays int8.
  int4 = (workdir / "export" / "model_int4.tflite").read_bytes()
  assert int4[4:8] == b"TFL3"
  assert (
    export.parse_c_array((workdir / "export" / "model_int4_data.cc").read_text()) == int4
  )
  export_report = (workdir / "export" / "export_report.md").read_text()
  assert "## model_int4.tflite: packed 4-bit filters" in export_report
  assert "dwsep3:s1:c16:w4" in export_report
  assert "integer-faithful QAT" in export_report and "JAX QAT (8-bit" in export_report
  assert "trained with per-layer 2/4/8-bit weights (the classifier's 4)" in export_report
  # The int8 model's bytes are set against every layer at 8 bits, not the own widths.
  layers = tuple(dataclasses.replace(x, weight_bits=None) for x in arch.layers)
  uniform8 = costs.compute_costs(dataclasses.replace(arch, layers=layers), 8)
  assert f"size at 8 bits ({math.ceil(uniform8.model_size_bits / 8)})" in export_report
  assert "| cost model: model size at its layers' bits |" in export_report
  # The 2-bit layer (16 x 8 weights) is stored as int4: 2 bits a weight more.
  assert "1 layer has 2-bit weights (128 weights)" in export_report
  assert "stored as int4, 32 bytes more" in export_report
  # Exported again from the same inputs: the finished export is reused as it is.
  mtime = (workdir / "export" / "model.tflite").stat().st_mtime_ns
  again = export_run.export_workdir(workdir)
  assert again["reused"]
  tflite_line = (
    f"| model.tflite, int8, LiteRT interpreter | {again['tflite_accuracy']:.4f}"
  )
  assert tflite_line in export_report  # the first export's own figure
  assert (workdir / "export" / "model.tflite").stat().st_mtime_ns == mtime


def test_train_autoencoder_entry_point_and_cache(tmp_path):
  workdir, cache = tmp_path / "work", tmp_path / "cache"
  cmd = [
    sys.executable,
    "experiments/train_autoencoder.py",
    "--config=configs/autoencoder_nb201.py",
    f"--workdir={workdir}",
    f"--config.cache_dir={cache}",
    "--config.autoencoder.steps=300",
    "--config.autoencoder.hidden=64",
    "--config.num_prior=500",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "exact reconstruction, holdout (15625 architectures)" in proc.stdout
  assert "500 decoded, 100.00% valid" in proc.stdout
  report = json.loads((workdir / "autoencoder_report.json").read_text())
  assert (workdir / "latent.png").stat().st_size > 10_000
  names = sorted(p.name for p in cache.iterdir())
  (entry,) = [cache / n for n in names if not n.endswith(".lock")]
  assert names == [entry.name, entry.name + ".lock"]  # the entry and its lock file
  assert entry.name.startswith("nb201-") and (entry / "meta.json").exists()
  # A second run (in process) loads the cached autoencoder: the same model, no
  # training.
  from nasq.autoencoder import cache as cache_lib

  def no_training(*args, **kwargs):
    raise AssertionError("the cached autoencoder was trained again")

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(cache_lib, "train", no_training)
    ae_run.train_and_report(config_from(cmd), str(workdir))
  again = json.loads((workdir / "autoencoder_report.json").read_text())
  assert again["holdout"] == report["holdout"]
  assert again["train_seconds"] == report["train_seconds"]


@pytest.fixture(scope="module")
def ae_cache(tmp_path_factory):
  """One autoencoder cache for the searches of this file: their autoencoder configs are
  the same, so only the first search of a worker trains it (the cache itself is tested
  in test_train_autoencoder_entry_point_and_cache and tests/autoencoder)."""
  return tmp_path_factory.mktemp("ae_cache")


def config_from(cmd: list[str]) -> ml_collections.ConfigDict:
  """The config an entry-point command line (``--config=`` and ``--config.x=y``
  overrides) gives, for the same run in process."""
  path = next(a.split("=", 1)[1] for a in cmd if a.startswith("--config="))
  config = sibling_config(os.path.join(ROOT, path), os.path.basename(path))
  for arg in cmd:
    if not arg.startswith("--config."):
      continue
    field, value = arg[len("--config.") :].split("=", 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a string, as absl reads it
    *parents, leaf = field.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[leaf] = value
  return config


def search_command(tmp_path, workdir, strategy="latent_bo", cache=None):
  cache = tmp_path / "cache" if cache is None else cache
  return [
    sys.executable,
    "experiments/search.py",
    "--config=configs/default.py",
    f"--workdir={workdir}",
    f"--config.strategy={strategy}",
    f"--config.cache_dir={cache}",
    f"--config.data.data_dir={tmp_path}",
    "--config.data.val_size=100",
    "--config.data.train_size=0",
    "--config.train.epochs=1",
    "--config.train.batch_size=50",
    "--config.final_train.epochs=1",
    "--config.final_train.batch_size=50",
    "--config.final_train.progress=False",
    "--config.num_initial=3",
    "--config.num_evaluations=5",
    "--config.num_final=1",
    "--config.space.max_layers=3",
    "--config.space.channels=(4, 8)",
    "--config.space.ops=('conv3', 'dwsep3', 'maxpool')",
    "--config.budget.model_size_bits=8000",
    "--config.autoencoder.latent_dim=8",
    "--config.autoencoder.hidden=64",
    "--config.autoencoder.steps=300",
    "--config.autoencoder.num_train=3000",
    "--config.autoencoder.num_holdout=100",
    "--config.strategies.map_steps=50",
    "--config.strategies.pool_size=128",
  ]


def test_search_entry_point_end_to_end_and_resume(tmp_path, fake_fashion_mnist, ae_cache):
  pytest.importorskip(
    "tflite_micro", reason=EXPORT_EXTRA
  )  # export=True needs the export extra
  fake_fashion_mnist(tmp_path, n_train=400, n_test=50)
  workdir = tmp_path / "search"
  cmd = search_command(tmp_path, workdir, cache=ae_cache) + [
    # Candidates see 200 of the 300 training images; the retraining sees all of them,
    # so the two have different normalization statistics.
    "--config.data.train_size=200",
    "--config.export=True",
    "--config.promotion.rungs=2x0",  # the 2 best trained again, 2 epochs
    "--config.reference=conv3:s2:c4 maxpool:s2",  # retrained beside the best
    "--config.initial_architectures=('conv3:s2:c4 maxpool:s2',)",  # and evaluated first
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = (workdir / "history.jsonl").read_text().splitlines()
  records = [json.loads(x) for x in lines]
  evaluated = [
    r for r in records if r["status"] in ("ok", "failed") and r["fidelity"] == 0
  ]
  assert len(evaluated) == 5
  # Successive halving: the 2 best of the search (min_keep) at rung 1.
  promoted = [r for r in records if r["fidelity"] == 1]
  best_two = sorted(
    (r for r in evaluated if r["status"] == "ok"), key=lambda r: -r["objective"]
  )[:2]
  assert [r["tokens"] for r in promoted] == [r["tokens"] for r in best_two]
  assert {r["source"] for r in promoted} == {"promotion"}
  assert len({tuple(r["tokens"]) for r in evaluated}) == 5
  assert all(r["costs"]["model_size_bits"] <= 8000 for r in evaluated)
  # The initial design, then latent BO's own proposals (not its random fallback).
  assert [r["source"] for r in evaluated] == ["initial"] * 3 + ["latent_bo"] * 2
  assert evaluated[0]["arch"] == "conv3:s2:c4 maxpool:s2"
  assert [r["origin"] for r in evaluated[:3]] == ["given", "random", "random"]
  assert all(r["latent"] is not None for r in evaluated[3:])
  for name in ("report.md", "pareto_size.png", "pareto_macs.png", "best_so_far.png"):
    assert (workdir / name).exists(), name
  report = (workdir / "report.md").read_text()
  assert "| rank | # | architecture | test accuracy |" in report
  assert "| 1 (delivered) |" in report
  assert (workdir / "best_checkpoint").is_dir()
  # The checkpoint carries the statistics it was trained with: the retraining's data
  # (final_data), not the candidates' subset.
  meta = json.loads((workdir / "best_checkpoint.json").read_text())
  final_ds = data.load_dataset(data.DataConfig(data_dir=str(tmp_path), val_size=100))
  search_ds = data.load_dataset(
    data.DataConfig(data_dir=str(tmp_path), val_size=100, train_size=200)
  )
  assert meta["mean"] == pytest.approx(final_ds.mean, abs=1e-9)
  assert meta["std"] == pytest.approx(final_ds.std, abs=1e-9)
  assert meta["mean"] != pytest.approx(search_ds.mean, abs=1e-9)
  assert any((workdir / "tensorboard").iterdir())
  final = [json.loads(x) for x in (workdir / "final.jsonl").read_text().splitlines()]
  assert len(final) == 1 and final[0]["test_accuracy"] is not None
  assert final[0]["delivered"] and final[0]["rank"] == 1
  # The retrained model is the best at the highest rung, a tie there (tiny validation
  # sets tie often) broken by the search's own score.
  rung0 = {tuple(r["tokens"]): r["objective"] for r in evaluated}
  ranks = {
    r["index"]: (r["objective"], rung0[tuple(r["tokens"])])
    for r in promoted
    if r["status"] == "ok"
  }
  assert final[0]["fidelity"] == 1 and final[0]["index"] in ranks, (final[0], promoted)
  assert ranks[final[0]["index"]] == max(ranks.values()), (final[0], promoted)
  assert "## Successive halving" in report
  reference = json.loads((workdir / "reference.json").read_text())
  assert reference["arch"] == "conv3:s2:c4 maxpool:s2"
  assert reference["status"] == "ok" and reference["test_accuracy"] is not None
  assert "Reference (hand-designed, same final recipe): `conv3:s2:c4" in report

  # With export=True the best model is exported: an int8 LiteRT flatbuffer, its C
  # array, an ONNX model and a report, listed in summary.json and report.md.
  summary = json.loads((workdir / "summary.json").read_text())
  assert "model.tflite" in summary["export"]["files"], summary.get("export")
  assert "## Export" in report
  tflite = (workdir / "export" / "model.tflite").read_bytes()
  assert tflite[4:8] == b"TFL3"  # the flatbuffer's file identifier
  assert (
    export.parse_c_array((workdir / "export" / "model_data.cc").read_text()) == tflite
  )
  assert "LiteRT interpreter" in (workdir / "export" / "export_report.md").read_text()
  assert (workdir / "export" / "model.onnx").stat().st_size > 0
  # On a device, as the README's guide says: raw pixels minus 128 into the int8
  # input (scale 1), argmax of the int8 output, in the arena the report gives.
  from tflite_micro import runtime

  test = data.load_fashion_mnist_idx(str(tmp_path))[1]
  export_report = (workdir / "export" / "export_report.md").read_text()
  packed = summary["export"]["int4"]
  for name, key in (
    ("model.tflite", "micro_accuracy_int8"),
    ("model_int4.tflite", "micro_accuracy_int4"),
  ):
    flatbuffer = (workdir / "export" / name).read_bytes()
    interpreter = runtime.Interpreter.from_bytes(flatbuffer)
    q = interpreter.get_input_details(0)["quantization_parameters"]
    assert (list(q["scales"]), list(q["zero_points"])) == ([1.0], [-128])
    correct = 0
    for image, label in zip(test.images, test.labels, strict=True):
      interpreter.set_input((image.astype(np.int16) - 128).astype(np.int8)[None], 0)
      interpreter.invoke()
      correct += int(np.argmax(interpreter.get_output(0)) == label)
    assert correct / len(test.labels) == packed[key]
  arena8 = export.micro_arena((workdir / "export" / "model.tflite").read_bytes())
  best = json.loads((workdir / "best_checkpoint.json").read_text())["architecture"]
  assert (
    arena8["head"]
    == next(f for f in final if f["arch"] == best)["costs"]["peak_activation_bytes"]
  )
  assert f"| LiteRT Micro arena: total | {arena8['total']} |" in export_report
  arena4 = export.micro_arena((workdir / "export" / "model_int4.tflite").read_bytes())
  assert arena4["head"] == packed["arena_int4"]["head"] == packed["arena_int4_predicted"]
  # The exported graph normalizes with the checkpoint's statistics: its JAX reference
  # accuracy is the retraining's test accuracy, which used them.
  assert summary["export"]["jax_accuracy"] == pytest.approx(
    final[0]["test_accuracy"], abs=1e-6
  )

  # Resume: the same command with the same workdir evaluates nothing again; asked for
  # a second retraining seed, it trains that seed of the best and of the reference only.
  more = cmd + ["--config.final_seeds=2"]
  proc = subprocess.run(more, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resuming: 5 evaluations" in proc.stdout
  assert (workdir / "history.jsonl").read_text().splitlines() == lines
  retrained = [x for x in proc.stdout.splitlines() if x.startswith("retraining")]
  seeds = [final[0]["seed"] + final_lib.SEED_STRIDE, final_lib.SEED_STRIDE]  # best, ref.
  assert [x.rsplit("seed ", 1)[1] for x in retrained] == [f"{s})" for s in seeds]
  added = (workdir / "final.jsonl").read_text().splitlines()[1:]
  assert [json.loads(x)["replicate"] for x in added] == [1]
  summary = json.loads((workdir / "summary.json").read_text())
  assert len(summary["final"][0]["test_accuracies"]) == 2
  assert summary["reference"]["seeds"] == [0, final_lib.SEED_STRIDE]
  assert "(2 seeds: " in (workdir / "report.md").read_text()
  # Another configuration in the same workdir is refused, naming what differs (in
  # process: the entry point's one-line errors are tested with bad data settings).
  bad = config_from(cmd + ["--config.weight_bits=8"])
  with pytest.raises(ConfigError, match="weight_bits"):
    search_lib.run_search(bad, workdir)
  # Another of its records retrained afterwards with the same recipe (the search's own
  # config, checked): the best record that fits 8000 bits, beside the finalist.
  again = [x.replace("experiments/search.py", "experiments/retrain.py") for x in cmd]
  run = lambda *extra: subprocess.run(  # noqa: E731
    again + list(extra), cwd=ROOT, capture_output=True, text=True, timeout=900
  )
  proc = run("--within_kb=0.9765625", "--seeds=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  (line,) = (workdir / "retrained.jsonl").read_text().splitlines()
  assert json.loads(line)["index"] == final[0]["index"]  # the best fits: it retrains
  assert "| retrained |" in proc.stdout and "| finalist |" in proc.stdout
  assert "| reference |" in proc.stdout
  assert len((workdir / "final.jsonl").read_text().splitlines()) == 2  # untouched
  with pytest.raises(ConfigError, match="weight_bits"):  # not its recipe
    retrain_lib.retrain_chosen(bad, workdir, records=(0,))
  # A search evaluation trained again exactly as the search trained it: on the same
  # machine, the same validation accuracy; a rerun with the same --out trains nothing.
  replay = [
    x.replace("experiments/search.py", "experiments/benchmarks/replay.py") for x in cmd
  ]
  out, best_index = tmp_path / "replay.jsonl", best_two[0]["index"]
  for _ in range(2):
    proc = subprocess.run(
      replay + [f"--records={best_index}", f"--out={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert row["now"] == row["recorded"] == records[best_index]["metrics"]["val_accuracy"]
    assert f"| {best_index} | {row['seed']} | {row['recorded']:.4f} |" in proc.stdout
  proc = subprocess.run(
    replay + [f"--records={promoted[0]['index']}"],
    cwd=ROOT, capture_output=True, text=True, timeout=900,
  )  # fmt: skip
  assert proc.returncode == 2 and "not a successful search evaluation" in proc.stderr


def test_a_bad_budget_is_one_line_and_leaves_nothing_behind(tmp_path):
  workdir = tmp_path / "search"
  cmd = search_command(tmp_path, workdir) + ["--config.budget.model_size_bits=100"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in proc.stderr
  assert (
    "budget.model_size_bits=100" in lines[0] and "smallest model_size_bits" in lines[0]
  )
  assert not workdir.exists()


@pytest.mark.parametrize(
  "override,message",
  [
    ("--config.data.data_dir=/nonexistent", "Fashion-MNIST file /nonexistent/"),
    ("--config.data.train_size=40", "train.batch_size 50 exceeds the 40 training"),
    ("--config.data.train_size=-5", "data.train_size must be >= 0"),
    ("--config.data.train_size=100000", "data.train_size=100000 exceeds the 300"),
    ("--config.data.val_size=0", "data.val_size must be >= 1"),
    ("--config.final_data.val_size=0", "final_data.val_size=0 is set, but final_data"),
    ("--config.promotion.rungs=1x5000", "rung 1x5000 asks for 5000 training images"),
  ],
)
def test_bad_data_settings_fail_before_any_work_and_leave_the_workdir_unmarked(
  tmp_path, fake_fashion_mnist, override, message
):
  """Each is one line naming the field, before the autoencoder trains, and the workdir
  is not marked as this search's: the corrected command then runs there."""
  fake_fashion_mnist(tmp_path, n_train=400, n_test=50)
  workdir = tmp_path / "search"
  cmd = search_command(tmp_path, workdir, cache=tmp_path / "no-cache") + [override]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
  assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not (workdir / "config.json").exists()
  assert not (tmp_path / "no-cache").exists()  # no autoencoder was trained


def test_export_true_without_the_export_extra_fails_before_any_work(
  tmp_path, fake_fashion_mnist
):
  fake_fashion_mnist(tmp_path, n_train=400, n_test=50)
  hide = tmp_path / "hide"
  hide.mkdir()
  # A module finder that makes the export extra's modules unimportable.
  (hide / "sitecustomize.py").write_text(
    "import sys\n"
    "class Hide:\n"
    "  def find_spec(self, name, path=None, target=None):\n"
    "    if name.split('.')[0] in ('tensorflow', 'tflite_micro'):\n"
    "      raise ModuleNotFoundError(name)\n"
    "sys.meta_path.insert(0, Hide())\n"
  )
  workdir = tmp_path / "search"
  cmd = search_command(tmp_path, workdir) + ["--config.export=True"]
  env = {
    **os.environ,
    "PYTHONPATH": f"{hide}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
  }
  proc = subprocess.run(
    cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
  assert (
    "export=True needs the export extra" in line and "pip install -e .[export]" in line
  )
  assert not (workdir / "config.json").exists()


def test_a_failed_export_ends_the_search_with_an_error_and_keeps_its_results(
  tmp_path, fake_fashion_mnist, monkeypatch, capsys
):
  from configs import default
  from nasq.export import ExportError
  from nasq.runs import config as config_lib
  from nasq.runs import export as export_run
  from nasq.runs import search

  pytest.importorskip("tflite_micro", reason=EXPORT_EXTRA)
  fake_fashion_mnist(tmp_path, n_train=400, n_test=50)
  config = default.get_config()
  for field, value in [
    ("strategy", "random"),
    ("data.data_dir", str(tmp_path)),
    ("data.val_size", 100),
    ("data.train_size", 0),
    ("train.batch_size", 50),
    ("final_train.batch_size", 50),
    ("final_train.progress", False),
    ("num_initial", 2),
    ("num_evaluations", 2),
    ("num_final", 1),
    ("space.max_layers", 2),
    ("space.channels", (4,)),
    ("space.ops", ("conv3", "maxpool")),
    ("budget.model_size_bits", 8000),
    ("progress", False),
    ("export", True),
    ("compilation_cache_dir", ""),
  ]:
    section, _, name = field.rpartition(".")
    setattr(config[section] if section else config, name, value)

  def fail(workdir):
    raise ExportError("the exporter broke")

  monkeypatch.setattr(export_run, "export_workdir", fail)
  workdir = tmp_path / "search"
  with pytest.raises(SystemExit) as exit_info:
    config_lib.run_main(search.run_search, config, workdir)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "error: export failed: ExportError: the exporter broke" in err
  summary = json.loads((workdir / "summary.json").read_text())
  assert "the exporter broke" in summary["export"]["error"]
  assert (workdir / "best_checkpoint").is_dir()  # the search's results stay
  assert len((workdir / "history.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("kind", ["npz", "folder"])
def test_a_search_on_the_users_own_data_runs_and_exports(tmp_path, kind):
  """A .npz of 16x16 colour images in 4 classes, or a folder of 12x12 grayscale PNGs in
  3 class subfolders: the space takes the data's image shape and classes, the search
  runs, the best model exports and feeds on that data's raw pixels."""
  pytest.importorskip("tflite_micro", reason=EXPORT_EXTRA)
  from PIL import Image

  rng = np.random.default_rng(0)
  if kind == "npz":
    path, shape, classes = tmp_path / "mine.npz", (16, 16, 3), 4
    x = rng.integers(0, 256, (360, *shape), dtype=np.uint8)
    y = np.arange(360) % classes
    x[y == 1] //= 2  # classes that differ, so that something is learned
    np.savez(path, x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
  else:
    path, shape, classes = tmp_path / "photos", (12, 12, 1), 3
    for c, name in enumerate(("ant", "bee", "cow")):
      (path / name).mkdir(parents=True)
      for i in range(90):
        pixels = rng.integers(0, 256, (12, 12), dtype=np.uint8) // (c + 1)
        Image.fromarray(pixels, "L").save(path / name / f"{i}.png")
  workdir = tmp_path / "search"
  cmd = search_command(tmp_path, workdir, strategy="random") + [
    f"--config.data.name={path}",
    "--config.data.val_size=40",
    "--config.num_evaluations=3",
    "--config.export=True",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  meta = json.loads((workdir / "best_checkpoint.json").read_text())
  assert meta["input_shape"] == list(shape) and meta["num_classes"] == classes
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["export"]["num_test"] == (60 if kind == "npz" else 54)
  tflite = (workdir / "export" / "model.tflite").read_bytes()
  from ai_edge_litert.interpreter import Interpreter

  details = Interpreter(model_content=tflite).get_input_details()[0]
  assert list(details["shape"][1:]) == list(shape) and details["dtype"] == np.int8


def test_a_search_killed_at_random_moments_resumes_to_the_same_records(
  tmp_path, fake_fashion_mnist, ae_cache
):
  """SIGKILL the real entry point three times, each as soon as its history has grown
  (so mid-way through the next evaluation, or the next record's write), and resume:
  the records equal those of an uninterrupted run, in order, with contiguous indices
  and no architecture evaluated twice. Synchronized on the history file, not a
  clock: each kill lands while candidates remain."""
  fake_fashion_mnist(tmp_path, n_train=400, n_test=50)
  extra = ["--config.num_evaluations=7", "--config.num_final=0"]
  whole = tmp_path / "whole"
  proc = subprocess.run(
    search_command(tmp_path, whole, cache=ae_cache) + extra,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]

  killed = tmp_path / "killed"
  cmd = search_command(tmp_path, killed, cache=ae_cache) + extra
  history = killed / "history.jsonl"

  def lines():
    return len(history.read_text().splitlines()) if history.exists() else 0

  kills = 0
  for _ in range(3):
    before = lines()
    p = subprocess.Popen(
      cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    while p.poll() is None and lines() == before and time.monotonic() < deadline:
      time.sleep(0.01)
    if p.poll() is None:
      p.send_signal(signal.SIGKILL)
      kills += 1
    p.wait()
  # Each run was killed with candidates left: 3 of the 7 records were written.
  assert kills == 3 and lines() <= 3, (kills, lines())
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]

  def records(workdir):
    rows = [json.loads(x) for x in (workdir / "history.jsonl").read_text().splitlines()]
    keys = ("index", "arch", "status", "objective", "source", "seed", "duplicate_of")
    return [tuple(r[k] for k in keys) for r in rows]

  uninterrupted, resumed = records(whole), records(killed)
  assert resumed == uninterrupted
  assert [r[0] for r in resumed] == list(range(len(resumed)))
  evaluated = [r[1] for r in resumed if r[2] in ("ok", "failed")]
  assert len(evaluated) == len(set(evaluated)) == 7


def test_the_fidelity_table_grows_resumes_and_reports(tmp_path, fake_fashion_mnist):
  fake_fashion_mnist(tmp_path, n_train=400, n_test=50)
  out = tmp_path / "fidelity.csv"
  cmd = [
    sys.executable,
    "experiments/benchmarks/fidelity.py",
    "--config=configs/default.py",
    f"--out={out}",
    "--num_random=1",
    "--hand_written=False",
    "--fidelities=naswot,1x100,ref",
    "--ref_epochs=1",
    f"--config.data.data_dir={tmp_path}",
    "--config.data.val_size=100",
    "--config.train.batch_size=50",
    "--config.final_train.batch_size=50",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out, newline="") as f:
    rows = list(csv.DictReader(f))
  archs = {r["arch"] for r in rows}
  assert len(archs) == 2  # fmnist_ref and 1 drawn
  assert len(rows) == 2 * 3 and {r["status"] for r in rows} == {"ok"}
  ref = [r for r in rows if r["fidelity"] == "ref"]
  assert {r["metric"] for r in ref} == {"test_accuracy"}  # trained on train+validation
  assert all(0 <= float(r["score"]) <= 1 for r in ref)
  assert {r["origin"] for r in rows} == {"random", "reference"}
  assert "| 1x100 | 2 |" in proc.stdout and "| naswot | 2 |" in proc.stdout
  # A rerun resumes: nothing is measured again.
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "6 rows already" in again.stdout
  with open(out, newline="") as f:
    assert len(list(csv.DictReader(f))) == 6
