"""The retraining after a search: which model is delivered, and what it carries."""

import json

import numpy as np

from nasq import checkpoints, data, evaluators
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
  space = macro.space_for_string(" ".join(texts), (28, 28, 1), 10)
  history = History.open(tmp_path / "search")
  for i, (text, val) in enumerate(zip(texts, [0.9, 0.8], strict=True)):
    arch = space.parse(text)
    history.append(
      Record(
        i,
        "ok",
        "initial",
        text,
        tuple(int(t) for t in space.encode(arch)),
        compute_costs(arch, 4).summary(),
        objective=val,
        metrics={"val_accuracy": val},
      )
    )
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
