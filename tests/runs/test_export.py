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


def test_the_device_guide_names_the_files_the_operators_and_the_arena(tmp_path):
  result = {
    "dir": str(tmp_path / "export"),
    "operators": ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D"],
    "arena": {"head": 100, "tail": 20, "total": 120},
    "int4": {"arena_int4": {"total": 150}},
  }
  guide = export_run.device_guide(result)
  assert f"Device files in {tmp_path / 'export'}/" in guide
  assert "model_int4_data.cc" in guide
  assert "MicroMutableOpResolver<4> resolver;" in guide
  for call in ("AddConv2D", "AddDepthwiseConv2D", "AddFullyConnected", "AddMaxPool2D"):
    assert f"resolver.{call}();" in guide
  assert "at least 120 bytes (int8 model), 150 bytes (int4 model)" in guide
  del result["int4"]
  assert "int4" not in export_run.device_guide(result)
