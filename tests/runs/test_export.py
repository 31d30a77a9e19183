"""A finished export is reused while its inputs are the same."""

import json

from nasq.runs import export as export_run


def test_an_exports_inputs_fingerprint_changes_with_any_input(tmp_path):
  """What decides whether a finished export is reused: the bytes of the model's files
  and the export's settings, nothing else (not the files' times)."""
  ckpt = tmp_path / "best_checkpoint"
  (ckpt / "d").mkdir(parents=True)
  (ckpt / "d" / "w").write_bytes(b"\x01\x02")
  arch = tmp_path / "best_architecture.txt"
  arch.write_text("conv3:s1:c4\n")
  settings = {"num_calibration": 500, "num_test": 0, "num_micro_test": 1000}
  base = export_run.inputs_fingerprint([arch, ckpt], settings)
  arch.write_text("conv3:s1:c4\n")  # rewritten, same bytes
  assert export_run.inputs_fingerprint([arch, ckpt], settings) == base
  assert export_run.inputs_fingerprint([arch, ckpt], settings | {"num_test": 9}) != base
  (ckpt / "d" / "w").write_bytes(b"\x01\x03")
  assert export_run.inputs_fingerprint([arch, ckpt], settings) != base
  out = tmp_path / "export"
  out.mkdir()
  assert export_run._finished_export(out, base) is None  # nothing exported yet
  (out / export_run.RESULT).write_text(json.dumps({"inputs": base, "result": {"a": 1}}))
  assert export_run._finished_export(out, base) == {
    "a": 1,
    "dir": str(out),
    "reused": True,
  }
  assert export_run._finished_export(out, "other") is None
