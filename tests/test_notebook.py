"""The Colab notebook's code cells, run top to bottom on a tiny offline search."""

import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "experiments", "colab_search.ipynb")


def test_colab_notebook_runs_top_to_bottom(tmp_path, monkeypatch, fake_fashion_mnist):
  fake_fashion_mnist(tmp_path, n_train=400, n_test=50)
  workdir = tmp_path / "work"
  # The kernel inherits this environment.
  monkeypatch.setenv("NASQ_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("NASQ_NOTEBOOK_DATA_DIR", str(tmp_path))
  monkeypatch.setenv("NASQ_NOTEBOOK_WORKDIR", str(workdir))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = NotebookClient(
    nb,
    timeout=900,
    kernel_name="python3",
    resources={"metadata": {"path": os.path.join(ROOT, "experiments")}},
  )
  client.execute()  # raises CellExecutionError, with the cell and traceback, on failure
  outputs = "\n".join(
    o.get("text", "")
    for cell in nb.cells
    if cell.cell_type == "code"
    for o in cell.outputs
  )
  assert "devices:" in outputs
  assert "architecture:" in outputs and "test accuracy" in outputs
  assert "accuracy on the first 500 test images" in outputs
  images = [
    o
    for cell in nb.cells
    if cell.cell_type == "code"
    for o in cell.outputs
    if "image/png" in o.get("data", {})
  ]
  assert len(images) == 2  # the Pareto front and the best-so-far curve
  assert (workdir / "best_checkpoint").is_dir()
