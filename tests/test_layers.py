"""The package's floors: drivers on top, the loop below them, no upward imports, no
ConfigDict below the driver floor, no import cycles."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "nasq"
# Modules that may be imported lazily, inside a function: optional dependencies only.
OPTIONAL = {
  "ray",
  "torch",
  "botorch",
  "gpytorch",
  "analognasbench",
  "tensorflow",  # the export extra
  "ai_edge_litert",
  "onnx",
  "onnxruntime",
  "tflite_micro",
}


def modules():
  out = {}
  for path in sorted(ROOT.rglob("*.py")):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = ast.parse(path.read_text())
  return out


MODULES = modules()


def imports(tree, top_level_only=False):
  """Absolute module names a module imports (``from nasq import x`` -> ``nasq.x``)."""
  nodes = tree.body if top_level_only else ast.walk(tree)
  names = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      names |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names |= {f"{node.module}.{a.name}" for a in node.names}
  return names


def nasq_imports(name):
  """The nasq modules ``name`` imports (names that are modules, not attributes)."""
  return {m for m in imports(MODULES[name]) if m in MODULES and m != name}


def test_only_the_driver_floor_reads_configdicts():
  below = [
    n
    for n in MODULES
    if not n.startswith("nasq.runs")
    and "ml_collections" in {m.split(".")[0] for m in imports(MODULES[n])}
  ]
  assert below == []


@pytest.mark.parametrize("name", [n for n in MODULES if not n.startswith("nasq.runs")])
def test_no_module_below_the_drivers_imports_them(name):
  assert not {m for m in nasq_imports(name) if m.startswith("nasq.runs")}


@pytest.mark.parametrize("name", [n for n in MODULES if n != "nasq.loop"])
def test_only_the_drivers_import_the_loop(name):
  if "nasq.loop" in nasq_imports(name):
    assert name.startswith("nasq.runs")


def test_there_are_no_import_cycles():
  graph = {n: nasq_imports(n) - {n} for n in MODULES}
  # A package __init__ re-exports its rooms: an edge from a room to its own package
  # is an import of a sibling through it, not a cycle through the package.
  for n, deps in graph.items():
    graph[n] = {d for d in deps if not n.startswith(d + ".")}
  state = {}

  def visit(n, path):
    if state.get(n) == "done":
      return
    assert state.get(n) != "active", " -> ".join(path + [n])
    state[n] = "active"
    for d in graph[n]:
      visit(d, path + [n])
    state[n] = "done"

  for n in graph:
    visit(n, [])


def test_imports_are_at_the_top_except_optional_dependencies():
  for name, tree in MODULES.items():
    inner = imports(tree) - imports(tree, top_level_only=True)
    assert {m.split(".")[0] for m in inner} <= OPTIONAL, name


def test_no_room_is_over_500_lines():
  sizes = {
    str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")
  }
  assert max(sizes.values()) <= 500, sizes
