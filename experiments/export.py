r"""Exports a finished search's best model (or a trained network) for devices.

  pip install -e .[export]    # tensorflow-cpu, ai-edge-litert, onnx, onnxruntime
  python experiments/export.py --workdir=/tmp/nasq_search
  python experiments/export.py --workdir=/tmp/nasq_train     # experiments/train.py's

Writes <workdir>/export/: model.tflite (full-integer int8), model_data.cc/.h (the
flatbuffer as a C array), model.onnx (int8 QDQ), for a model with <= 4-bit layers
model_int4.tflite and model_int4_data.cc/.h (those layers' filters packed as int4), and
export_report.md (test accuracy of the JAX QAT model, of the .tflite under the LiteRT
interpreter, of the .onnx under onnxruntime, of the int8 and int4 models under LiteRT
Micro; bytes and arenas against the cost model).
"""

from absl import app, flags, logging

from nasq.runs import export as export_run
from nasq.runs.config import run_main, user_errors

_WORKDIR = flags.DEFINE_string(
  "workdir", "/tmp/nasq_search", "A finished search or experiments/train.py run."
)
_OUT = flags.DEFINE_string("out", "", "Output directory (default <workdir>/export).")
_NUM_TEST = flags.DEFINE_integer("num_test", 0, "Test images (0: the whole test set).")
_NUM_MICRO_TEST = flags.DEFINE_integer(
  "num_micro_test",
  1000,
  "Test images the int8 and int4 models run under LiteRT Micro (0: all; about 20 ms "
  "an image each for a 20M-MAC network).",
)
_FORCE = flags.DEFINE_bool(
  "force", False, "Export again even if the export of these inputs is finished."
)
_NUM_CALIBRATION = flags.DEFINE_integer(
  "num_calibration", 500, "Training images that calibrate the int8 activation ranges."
)


def _export():
  with user_errors():
    return export_run.export_workdir(
      _WORKDIR.value,
      _OUT.value or None,
      num_calibration=_NUM_CALIBRATION.value,
      num_test=_NUM_TEST.value,
      num_micro_test=_NUM_MICRO_TEST.value,
      reuse=not _FORCE.value,
    )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  result = run_main(_export)
  print(open(f"{result['dir']}/export_report.md").read())
  reused = " (reused: its inputs are those of the finished export there)"
  print(f"exported to {result['dir']}{reused if result.get('reused') else ''}\n")
  print(export_run.device_guide(result))


if __name__ == "__main__":
  app.run(main)
