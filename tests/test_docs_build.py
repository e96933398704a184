"""The documentation site builds without a warning and every example in it runs.

Runs the same two commands as the README: Sphinx's HTML builder with warnings as
errors, then its doctest builder, which executes every `{testcode}` block of the
pages and compares `{testoutput}`.
"""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]

pytest.importorskip("sphinx", reason="the docs dependencies come with the `test` extra")


def _sphinx(builder, out):
  return subprocess.run(
      [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", builder,
       str(ROOT / "docs"), str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_html_builds_without_warnings(tmp_path):
  result = _sphinx("html", tmp_path / "html")
  assert result.returncode == 0, result.stderr + result.stdout
  api = (tmp_path / "html" / "api.html").read_text()
  import gumbax
  names = list(gumbax.__all__)
  for module in ("estimators", "nnx", "linen", "schedules", "diagnostics", "networks"):
    names += [f"{module}.{n}" for n in getattr(gumbax, module).__all__]

  def obj(name):
    out = gumbax
    for part in name.split("."):
      out = getattr(out, part)
    return out

  def documented(name):
    return f'id="gumbax.{name}"' in api or f'id="module-gumbax.{name}"' in api

  for name in names:  # documented under this name or, for an alias, under another
    assert documented(name) or any(documented(other) and obj(other) is obj(name)
                                   for other in names if other != name), (
        f"the API reference misses gumbax.{name}")
  reference = (tmp_path / "html" / "experiments.html").read_text()
  for key in ("learning_rate", "binarization", "final_eval_samples", "checkpoints"):
    assert key in reference, f"the config reference misses {key}"


def test_every_example_runs(tmp_path):
  result = _sphinx("doctest", tmp_path / "doctest")
  report = (tmp_path / "doctest" / "output.txt").read_text()
  assert result.returncode == 0, report + result.stderr
  ran = re.search(r"^\s*(\d+) tests?$", report, re.M)
  assert ran and int(ran.group(1)) > 0, report
  assert re.search(r"^\s*0 failures in tests$", report, re.M), report
