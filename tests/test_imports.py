"""The package's modules import alone, and their imports of one another form no cycle (issue 27).

A cycle makes the import order matter (a module half-initialised when another reads it) and ties
the loading of a run to the training loop; `checkpoints` holds what both need.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sslmd_jax"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_module_name(p) for p in PACKAGE.rglob("*.py"))


def _imported(path: pathlib.Path, modules: set[str]) -> set[str]:
  """The package modules that `path` imports anywhere in its body (top level or in a function)."""
  found = set()
  name = _module_name(path)
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      names = [base] + [f"{base}.{alias.name}" for alias in node.names]
    else:
      continue
    found.update(n for n in names if n in modules)
  return found


def import_graph() -> dict[str, set[str]]:
  """`{module: the sslmd_jax modules it imports}` over every module of the package."""
  modules = set(MODULES)
  graph = {}
  for path in PACKAGE.rglob("*.py"):
    name = _module_name(path)
    graph[name] = _imported(path, modules) - {name}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph` as `[a, b, ..., a]`, or None (depth-first search)."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done.
  path: list[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_find_cycle_finds_one():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_package_modules_import_one_another_without_a_cycle():
  graph = import_graph()
  assert graph["sslmd_jax.train"] >= {"sslmd_jax.objectives"}  # The parse sees the imports.
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_loading_a_run_needs_no_training_code():
  graph = import_graph()
  for module in ("sslmd_jax.inference", "sslmd_jax.evaluate_run", "sslmd_jax.export",
                 "sslmd_jax.predict"):
    seen, todo = set(), [module]
    while todo:
      for nxt in graph[todo.pop()] - seen:
        seen.add(nxt)
        todo.append(nxt)
    assert "sslmd_jax.train" not in seen, module


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module):
  result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=PACKAGE.parent,
                          capture_output=True, text=True, env={"PYTHONPATH": str(PACKAGE.parent),
                                                               "JAX_PLATFORMS": "cpu",
                                                               "PATH": "/usr/bin:/bin"})
  assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("recipe", sorted(p.name for p in (PACKAGE.parent / "configs").glob("*.py")
                                          if p.name != "__init__.py"))
def test_recipes_import_the_default_config_as_a_module(recipe):
  tree = ast.parse((PACKAGE.parent / "configs" / recipe).read_text())
  imports = [(node.module, [a.name for a in node.names]) for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom)]
  assert ("sslmd_jax.configs", ["default"]) in imports
  assert not any(isinstance(node, ast.Import) and any(a.name.startswith("importlib")
                                                      for a in node.names)
                 for node in ast.walk(tree))
