"""The retraining after a search: which model is delivered, and what it carries."""

import json

import numpy as np
import pytest

from nasq import checkpoints, data, evaluators, report
from nasq.costs import Budget, compute_costs
from nasq.history import History, Record
from nasq.quant import QuantConfig
from nasq.runs import final
from nasq.spaces import macro
from nasq.train import TrainConfig


def test_the_delivered_model_is_chosen_by_validation_never_by_test(
  tmp_path, fake_fashion_mnist, monkeypatch
):
  """Two candidates: the search ranks A above B (validation), B then scores higher on
  the test set. A is delivered, and both test accuracies are reported."""
  fake_fashion_mnist(tmp_path, n_train=200, n_test=40)
  texts = ["conv3:s1:c4", "conv3:s1:c8"]
  space, history = _history(tmp_path, texts)  # validation 0.9, 0.8
  test_accuracy = {"conv3:s1:c4": 0.5, "conv3:s1:c8": 0.7}  # B beats A on test

  class FakeEvaluator:
    def __init__(self, dataset, config, quant):
      assert config.final  # retrained on train+validation

    def __call__(self, arch, seed, keep_variables=False):
      variables = {"params": {"w": np.full(3, len(arch.to_string()), np.float32)}}
      metrics = {"test_accuracy": test_accuracy[arch.to_string()]}
      return evaluators.Evaluation("ok", metrics, 1.0, "", variables)

  monkeypatch.setattr(evaluators, "QATEvaluator", FakeEvaluator)
  data_config = data.DataConfig(data_dir=str(tmp_path), val_size=50)
  workdir = tmp_path / "search"
  finals = final.retrain_best(
    workdir,
    history,
    space,
    Budget(),
    QuantConfig(4),
    data_config,
    TrainConfig(epochs=1, batch_size=50),
    num_final=2,
  )
  assert [f["arch"] for f in finals] == texts  # in the search's order
  assert [f["delivered"] for f in finals] == [True, False]
  assert [f["test_accuracy"] for f in finals] == [0.5, 0.7]
  assert (workdir / "best_architecture.txt").read_text().strip() == "conv3:s1:c4"
  like = {"params": {"w": np.zeros(3, np.float32)}}
  restored = checkpoints.load_checkpoint(str(workdir / "best_checkpoint"), like)
  assert float(restored["params"]["w"][0]) == len("conv3:s1:c4")
  meta = json.loads((workdir / "best_checkpoint.json").read_text())
  ds = data.load_dataset(data_config)
  assert meta["architecture"] == "conv3:s1:c4" and meta["weight_bits"] == 4
  assert meta["mean"] == list(ds.mean) and meta["std"] == list(ds.std)
  assert "validation" in meta["selected_by"]
  # Resumed, nothing is retrained and the same model stays delivered.
  again = final.retrain_best(
    workdir,
    history,
    space,
    Budget(),
    QuantConfig(4),
    data_config,
    TrainConfig(epochs=1, batch_size=50),
    num_final=2,
  )
  assert again == finals


def _history(tmp_path, texts=("conv3:s1:c4",)):
  """Candidates ranked in the order given (validation 0.9, 0.8, ...), seeds 7, 8, ..."""
  space = macro.space_for_string(" ".join(texts), (28, 28, 1), 10)
  history = History.open(tmp_path / "search")
  for i, text in enumerate(texts):
    arch = space.parse(text)
    history.append(
      Record(
        i,
        "ok",
        "initial",
        text,
        tuple(int(t) for t in space.encode(arch)),
        compute_costs(arch, 4).summary(),
        objective=0.9 - 0.1 * i,
        metrics={"val_accuracy": 0.9 - 0.1 * i},
        seed=7 + i,
      )
    )
  return space, history


def _retrain_args(tmp_path, workdir, history, space):
  """retrain_best's positional arguments for the fake data in ``tmp_path``."""
  return (
    workdir,
    history,
    space,
    Budget(),
    QuantConfig(4),
    data.DataConfig(data_dir=str(tmp_path), val_size=50),
    TrainConfig(epochs=1, batch_size=50),
  )


class SeededEvaluator:
  """Test accuracy a function of the seed; records each call."""

  calls = []

  def __init__(self, dataset, config, quant):
    assert config.final

  def __call__(self, arch, seed, keep_variables=False):
    SeededEvaluator.calls.append((arch.to_string(), seed, keep_variables))
    variables = {"params": {"w": np.full(3, seed, np.float32)}}
    metrics = {"test_accuracy": 0.5 + 0.1 * (seed // final.SEED_STRIDE)}
    return evaluators.Evaluation("ok", metrics, 2.0, "", variables)


def test_more_seeds_on_a_finished_retraining_train_only_the_missing_ones(
  tmp_path, fake_fashion_mnist, monkeypatch
):
  """A final.jsonl written with one seed (before replicates existed: no replicate
  field), then retrained with 3: two retrainings, at seed + k * SEED_STRIDE, the mean
  and each seed reported, the delivered checkpoint still replicate 0's."""
  fake_fashion_mnist(tmp_path, n_train=200, n_test=40)
  space, history = _history(tmp_path)
  monkeypatch.setattr(evaluators, "QATEvaluator", SeededEvaluator)
  SeededEvaluator.calls = []
  workdir = tmp_path / "search"
  args = _retrain_args(tmp_path, workdir, history, space)
  (one,) = final.retrain_best(*args, num_final=1)
  assert SeededEvaluator.calls == [("conv3:s1:c4", 7, True)]
  assert one["test_accuracy"] == 0.5 and one["test_accuracies"] == [0.5]
  # The line as an older nasq wrote it.
  line = json.loads((workdir / "final.jsonl").read_text())
  del line["replicate"], line["seed"]
  # ... and a killed writer's cut line after it: dropped, retrained, never glued to.
  (workdir / "final.jsonl").write_text(json.dumps(line) + '\n{"index": 0, "repl')
  (three,) = final.retrain_best(*args, num_final=1, num_seeds=3)
  lines = (workdir / "final.jsonl").read_text().splitlines()
  assert [json.loads(x)["replicate"] for x in lines[1:]] == [1, 2]
  stride = final.SEED_STRIDE
  assert SeededEvaluator.calls[1:] == [
    ("conv3:s1:c4", 7 + stride, False),
    ("conv3:s1:c4", 7 + 2 * stride, False),
  ]
  assert three["seeds"] == [7, 7 + stride, 7 + 2 * stride]
  assert three["test_accuracies"] == pytest.approx([0.5, 0.6, 0.7])
  assert three["test_accuracy"] == pytest.approx(0.6)
  assert three["test_accuracy_std"] == pytest.approx(0.1)
  assert three["delivered"] and three["seconds"] == 6.0
  like = {"params": {"w": np.zeros(3, np.float32)}}
  restored = checkpoints.load_checkpoint(str(workdir / "best_checkpoint"), like)
  assert float(restored["params"]["w"][0]) == 7  # replicate 0's weights
  assert report.accuracy_text(three) == (
    "0.6000 ± 0.1000 (3 seeds: 0.5000, 0.6000, 0.7000)"
  )
  # Resumed again: nothing retrains.
  assert final.retrain_best(*args, num_final=1, num_seeds=3) == [three]
  assert len(SeededEvaluator.calls) == 3


def test_only_the_delivered_candidate_is_retrained_with_further_seeds(
  tmp_path, fake_fashion_mnist, monkeypatch
):
  """Two finalists, 2 seeds: both once (in rank order), then the delivered one again."""
  fake_fashion_mnist(tmp_path, n_train=200, n_test=40)
  space, history = _history(tmp_path, ("conv3:s1:c4", "conv3:s1:c8"))
  monkeypatch.setattr(evaluators, "QATEvaluator", SeededEvaluator)
  SeededEvaluator.calls = []
  best, runner_up = final.retrain_best(
    *_retrain_args(tmp_path, tmp_path / "search", history, space),
    num_final=2,
    num_seeds=2,
  )
  stride = final.SEED_STRIDE
  assert SeededEvaluator.calls == [
    ("conv3:s1:c4", 7, True),
    ("conv3:s1:c8", 8, True),
    ("conv3:s1:c4", 7 + stride, False),
  ]
  assert best["delivered"] and best["seeds"] == [7, 7 + stride]
  assert not runner_up["delivered"] and runner_up["seeds"] == [8]
  assert runner_up["test_accuracy"] == 0.5 and runner_up["test_accuracy_std"] is None


def test_the_reference_gains_seeds_from_an_older_single_seed_file(
  tmp_path, fake_fashion_mnist, monkeypatch
):
  fake_fashion_mnist(tmp_path, n_train=200, n_test=40)
  space, _ = _history(tmp_path)
  monkeypatch.setattr(evaluators, "QATEvaluator", SeededEvaluator)
  SeededEvaluator.calls = []
  workdir = tmp_path / "search"
  workdir.mkdir(exist_ok=True)
  args = (
    workdir,
    "conv3:s2:c4",
    space,
    Budget(),
    QuantConfig(4),
    data.DataConfig(data_dir=str(tmp_path), val_size=50),
    TrainConfig(epochs=1, batch_size=50),
    3,
  )
  # reference.json as an older nasq wrote it: one training, no replicates.
  arch = final.resolve_reference("conv3:s2:c4", space)
  old = {
    "name": "conv3:s2:c4",
    "arch": arch.to_string(),
    "status": "ok",
    "test_accuracy": 0.5,
    "seconds": 2.0,
    "costs": compute_costs(arch, 4).summary(),
    "fits_budget": True,
  }
  (workdir / "reference.json").write_text(json.dumps(old))
  assert final.retrain_reference(*args)["test_accuracy"] == 0.5  # one seed: as saved
  assert SeededEvaluator.calls == []
  entry = final.retrain_reference(*args, num_seeds=2)
  assert SeededEvaluator.calls == [(arch.to_string(), 3 + final.SEED_STRIDE, False)]
  assert entry["seeds"] == [3, 3 + final.SEED_STRIDE]
  assert entry["test_accuracy"] == pytest.approx(0.55)
  assert json.loads((workdir / "reference.json").read_text()) == entry
  assert final.retrain_reference(*args, num_seeds=2) == entry  # nothing retrains
  assert len(SeededEvaluator.calls) == 1


def test_chosen_records_retrain_beside_the_finalists_without_touching_them(
  tmp_path, fake_fashion_mnist, monkeypatch
):
  """A finished search's smaller network retrained afterwards: at the finalists' seeds,
  into retrained.jsonl (final.jsonl and the delivered model unchanged), resumable."""
  fake_fashion_mnist(tmp_path, n_train=200, n_test=40)
  texts = ("conv3:s1:c8", "conv3:s1:c4", "conv3:s1:c16")
  space, history = _history(tmp_path, texts)
  monkeypatch.setattr(evaluators, "QATEvaluator", SeededEvaluator)
  SeededEvaluator.calls = []
  workdir = tmp_path / "search"
  data_config = data.DataConfig(data_dir=str(tmp_path), val_size=50)
  train_config = TrainConfig(epochs=1, batch_size=50)
  (best,) = final.retrain_best(
    workdir, history, space, Budget(), QuantConfig(4), data_config, train_config, 1
  )
  finals_text = (workdir / "final.jsonl").read_text()
  # The best record at most conv3:s1:c4's size: c4 (c8 ranks higher but is larger).
  small = compute_costs(space.parse("conv3:s1:c4"), 4).model_size_bits
  chosen = final.best_within(history, Budget(), small)
  assert [r.arch for r in chosen] == ["conv3:s1:c4"]
  assert final.best_within(history, Budget(), small - 1) == []
  evaluate = final.FinalEvaluator(QuantConfig(4), data_config, train_config)
  args = (workdir, chosen, space, QuantConfig(4), evaluate)
  (one,) = final.retrain_records(*args, num_seeds=2)
  stride = final.SEED_STRIDE
  assert SeededEvaluator.calls[1:] == [
    ("conv3:s1:c4", 8, True),
    ("conv3:s1:c4", 8 + stride, False),
  ]
  assert one["arch"] == "conv3:s1:c4" and one["seeds"] == [8, 8 + stride]
  assert one["test_accuracies"] == pytest.approx([0.5, 0.6])
  assert not one["delivered"]
  assert (workdir / "final.jsonl").read_text() == finals_text
  assert (workdir / "best_architecture.txt").read_text().strip() == "conv3:s1:c8"
  assert final.read_finals(workdir, history) == [best]
  # Resumed with a third seed: only that one trains.
  (three,) = final.retrain_records(*args, num_seeds=3)
  assert SeededEvaluator.calls[3:] == [("conv3:s1:c4", 8 + 2 * stride, False)]
  assert three["test_accuracies"] == pytest.approx([0.5, 0.6, 0.7])
  assert len((workdir / final.RETRAINED).read_text().splitlines()) == 3


def test_a_failed_retraining_is_tried_again_once_by_the_next_run(
  tmp_path, fake_fashion_mnist, monkeypatch
):
  """The best candidate's retraining fails (out of memory, a killed worker), so the
  runner-up is delivered; the next run trains the best again and, now that it
  succeeds, delivers it. A retraining that fails on its second try too is left failed:
  a third run trains nothing. The reference's replicates behave the same."""
  fake_fashion_mnist(tmp_path, n_train=200, n_test=40)
  space, history = _history(tmp_path, ("conv3:s1:c4", "conv3:s1:c8"))
  outcomes = {"conv3:s1:c4": ["failed", "ok"], "conv3:s1:c8": ["ok"]}
  calls = []

  class FlakyEvaluator:
    def __init__(self, dataset, config, quant):
      pass

    def __call__(self, arch, seed, keep_variables=False):
      text = arch.to_string()
      calls.append(text)
      status = outcomes[text].pop(0) if outcomes[text] else "failed"
      variables = {"params": {"w": np.full(3, len(text), np.float32)}}
      metrics = {"test_accuracy": 0.6 if status == "ok" else None}
      return evaluators.Evaluation(status, metrics, 1.0, "", variables)

  monkeypatch.setattr(evaluators, "QATEvaluator", FlakyEvaluator)
  workdir = tmp_path / "search"
  args = _retrain_args(tmp_path, workdir, history, space)
  first = final.retrain_best(*args, num_final=2)
  assert [f["delivered"] for f in first] == [False, True]
  assert (workdir / "best_architecture.txt").read_text().strip() == "conv3:s1:c8"
  second = final.retrain_best(*args, num_final=2)
  assert calls == ["conv3:s1:c4", "conv3:s1:c8", "conv3:s1:c4"]
  assert [f["delivered"] for f in second] == [True, False]
  assert [f["status"] for f in second] == ["ok", "ok"]
  assert (workdir / "best_architecture.txt").read_text().strip() == "conv3:s1:c4"
  assert final.read_finals(workdir, history) == second

  # The reference: fails twice (its two tries), then is left alone.
  outcomes["conv3:s1:c4"] = ["failed", "failed"]
  for expected_calls in (4, 5, 5):
    ref = final.retrain_reference(
      workdir, "conv3:s1:c4", space, Budget(), *args[4:], seed=3
    )
    assert len(calls) == expected_calls
  assert ref["status"] == "failed" and ref["replicates"][0]["attempts"] == 2
