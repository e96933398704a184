"""The code's seams, read from its source: what imports what, private names, function size.

- ``benchmarks/`` measures speed and imports ``gumbax`` only (and its own helpers),
  never ``experiments``.
- No module uses another module's private (``_name``) attribute. A package's private
  modules (``gumbax._checks``, ``experiments.tasks._mnist``) are imported only from
  inside that package.
- No ``dataclasses.replace(..., temperature=...)`` outside the tests: a temperature is
  a call argument, never patched into an estimator.
- No function in ``experiments/`` is longer than 60 lines.
"""

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]
PACKAGES = ("gumbax", "experiments", "benchmarks")
# Named tuples' public API starts with an underscore.
NAMEDTUPLE_API = frozenset({"_replace", "_fields", "_asdict", "_make", "_field_defaults"})
MAX_FUNCTION_LINES = 60


def _sources(package: str) -> list[pathlib.Path]:
  return sorted((ROOT / package).rglob("*.py"))


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
  return name.startswith("_") and not name.startswith("__")


def _imported_modules(tree: ast.Module) -> dict[str, str]:
  """Local name -> module it names, for ``import a.b as c`` and ``from a import b``
  (where ``a.b`` is a module of this repository)."""
  names = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        local = alias.asname or alias.name.split(".")[0]
        names[local] = alias.name if alias.asname else alias.name.split(".")[0]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        path = ROOT / full.replace(".", "/")
        if path.with_suffix(".py").exists() or path.is_dir():
          names[alias.asname or alias.name] = full
  return names


def _violations() -> list[str]:
  found = []
  for package in PACKAGES:
    for path in _sources(package):
      tree = ast.parse(path.read_text(), filename=str(path))
      here = _module_name(path)
      modules = _imported_modules(tree)
      for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
          for alias in node.names:
            owner = node.module
            target = f"{owner}.{alias.name}"
            is_module = target in modules.values()
            if _private(alias.name) and not (is_module and here.startswith(owner + ".")
                                             or is_module and here == owner):
              found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {owner} import {alias.name}")
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in NAMEDTUPLE_API:
          if isinstance(node.value, ast.Name) and node.value.id in modules:
            owner = modules[node.value.id]
            if owner.split(".")[0] in PACKAGES:
              found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
  return found


def test_no_module_uses_another_modules_private_names():
  assert _violations() == []


def test_benchmarks_import_only_gumbax():
  for path in _sources("benchmarks"):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import)
               else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      assert not any(n.split(".")[0] == "experiments" for n in names), (
          f"{path.relative_to(ROOT)}:{node.lineno} imports experiments")


def test_no_temperature_is_patched_into_an_estimator():
  for package in PACKAGES:
    for path in _sources(package):
      for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "replace"
            and any(k.arg == "temperature" for k in node.keywords)):
          pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno}: replace(..., temperature=...)")


def test_no_function_in_experiments_is_longer_than_60_lines():
  long = []
  for path in _sources("experiments"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES:
          long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
  assert long == []


def test_the_checks_catch_what_they_look_for(tmp_path, monkeypatch):
  """The private-name check is not vacuous: a planted violation is found."""
  fake = tmp_path / "gumbax"
  fake.mkdir()
  (fake / "__init__.py").write_text("")
  (fake / "a.py").write_text("def _hidden():\n  return 1\n")
  (fake / "b.py").write_text("from gumbax import a\nfrom gumbax.a import _hidden\nx = a._hidden()\n")
  module = sys.modules[__name__]
  monkeypatch.setattr(module, "ROOT", tmp_path)
  monkeypatch.setattr(module, "PACKAGES", ("gumbax",))
  found = _violations()
  assert any("from gumbax.a import _hidden" in f for f in found)
  assert any("a._hidden" in f and "import" not in f for f in found)
