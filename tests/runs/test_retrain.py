"""Opening a finished search to train some of its records again."""

import json

import pytest

from nasq.costs import compute_costs
from nasq.history import History, Record
from nasq.runs import retrain, search
from nasq.runs import settings as settings_lib
from nasq.runs import workdir as workdir_lib
from nasq.spaces import macro


def _history(workdir):
  """ok at fidelity 0, failed, ok at promotion rung 1."""
  space = macro.space_for_string("conv3:s1:c4", (28, 28, 1), 10)
  arch = space.parse("conv3:s1:c4")
  history = History.open(workdir)
  for i, (status, fidelity) in enumerate((("ok", 0), ("failed", 0), ("ok", 1))):
    history.append(
      Record(
        i,
        status,
        "initial",
        "conv3:s1:c4",
        tuple(int(t) for t in space.encode(arch)),
        compute_costs(arch, 4).summary(),
        objective=0.5 if status == "ok" else None,
        fidelity=fidelity,
      )
    )
  return history


def test_records_must_be_successful_and_of_the_fidelity_asked_for(tmp_path):
  history = _history(tmp_path)
  assert [r.index for r in retrain.successful_records(history, ["2", 0])] == [2, 0]
  assert [r.index for r in retrain.successful_records(history, [0], fidelity=0)] == [0]
  with pytest.raises(
    ValueError, match=r"records: 1 is not a successful record of .* 0-2"
  ):
    retrain.successful_records(history, [1])
  with pytest.raises(ValueError, match=r"records: 2 is not a successful search evaluat"):
    retrain.successful_records(history, [2], fidelity=0)
  with pytest.raises(ValueError, match=r"records: 3 is not"):
    retrain.successful_records(history, [3])
  with pytest.raises(ValueError, match=r"records: integers, got \['x'\]"):
    retrain.successful_records(history, ["x"])
  with pytest.raises(ValueError, match="records: give at least one"):
    retrain.successful_records(history, [])


def test_a_finished_search_opens_only_with_its_own_config(tmp_path):
  config = search.default_config()
  with pytest.raises(ValueError, match="workdir: .* holds no search"):
    retrain.open_finished(config, tmp_path)
  _history(tmp_path)
  with pytest.raises(ValueError, match="workdir: .* has no config.json"):
    retrain.open_finished(config, tmp_path)
  # As run_search writes it: final_data resolved against data.
  resolved = settings_lib.resolve_data_sections(config)
  workdir_lib.write_config(tmp_path, resolved)
  settings, history = retrain.open_finished(config, tmp_path)
  assert len(history) == 3
  assert settings == settings_lib.SearchSettings.from_config(resolved)
  other = json.loads((tmp_path / "config.json").read_text())
  other["seed"] = config.seed + 1
  (tmp_path / "config.json").write_text(json.dumps(other))
  with pytest.raises(ValueError, match="fields .*seed.* differ"):
    retrain.open_finished(config, tmp_path)
