"""docs/tutorial/make_figures.py runs (at tiny sizes) and the tutorial's code runs."""

from __future__ import annotations

import contextlib
import io
import importlib.util
import pathlib
import re
import textwrap

import numpy as np
import pytest

from _tolerance import f32_tol

ROOT = pathlib.Path(__file__).parents[1]
PAGE = ROOT / "docs" / "tutorial.md"
SCRIPT = ROOT / "docs" / "tutorial" / "make_figures.py"
MNIST = ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="module")
def figures():
  spec = importlib.util.spec_from_file_location("make_figures", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _png(path):
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_concrete_samples(figures, tmp_path):
  out = figures.concrete_samples(tmp_path / "s.png", temperatures=(0.5, 2.0), num_samples=64,
                                 num_shown=2)
  _png(tmp_path / "s.png")
  for tau in ("0.5", "2"):
    mean = np.array(out["expectation"][tau])
    assert mean.shape == (5,) and abs(mean.sum() - 1) <= f32_tol(1.0, ulps=64)
  freq = np.array(out["gumbel_max_frequencies"]) * 64  # counts of one-hot samples
  np.testing.assert_array_equal(freq, np.round(freq))
  assert freq.sum() == 64


def test_bias_variance(figures, tmp_path):
  n = 512
  out = figures.bias_variance(tmp_path / "b.png", temperatures=(0.3, 5.0), num_samples=n,
                              biased=("relaxed",), unbiased=("rloo",))
  _png(tmp_path / "b.png")
  bias2, variance = out["relaxed"]["squared_bias"], out["relaxed"]["variance"]
  assert bias2[0] < bias2[1] and variance[0] > variance[1]  # the trade-off the figure shows
  # Unbiased: the measured squared bias is noise of mean variance / n (5 coordinates).
  assert out["rloo"]["squared_bias"] < 10 * out["rloo"]["variance"] / n
  # At a high temperature the relaxed gradient shrinks towards 0: bias² -> |exact|².
  assert bias2[1] < out["exact_squared_norm"]


def test_page_shows_the_figures_and_the_command():
  page = PAGE.read_text()
  for name in ("concrete_samples.png", "bias_variance.png", "learning_curves.png"):
    assert f"](tutorial/{name})" in page
    _png(SCRIPT.parent / name)
  assert "python docs/tutorial/make_figures.py" in page


@pytest.mark.slow
def test_page_examples_run():
  """The page's ``{testcode}`` blocks run in order in one namespace, as the docs'
  doctest builder runs them, and print what a following ``{testoutput}`` block says.

  Slow: the default run checks this in tests/test_docs_build.py::test_every_example_runs,
  whose Sphinx doctest builder runs these blocks (the page's group, in order) and
  compares their ``{testoutput}``; this is the same check without Sphinx, for a quick
  look at one page.
  """
  page = PAGE.read_text()
  blocks = re.findall(r"```\{testcode\}\n(.*?)```\n(?:\s*```\{testoutput\}\n(.*?)```)?", page,
                      flags=re.S)
  assert blocks
  namespace: dict = {}
  for code, expected in blocks:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
      exec(compile(code, str(PAGE), "exec"), namespace)
    if expected:
      assert printed.getvalue().strip() == expected.strip()


def test_page_code_is_the_scripts():
  """Each plain code block of the page is a verbatim excerpt of the figure script."""
  page, script = PAGE.read_text(), SCRIPT.read_text()
  blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
  assert blocks
  dedented = [textwrap.dedent(line) for line in script.splitlines()]
  for block in blocks:
    lines = block.strip("\n").splitlines()
    found = any(dedented[i:i + len(lines)] == [textwrap.dedent(l) for l in lines]
                for i in range(len(dedented)))
    assert found, f"not in {SCRIPT.name}:\n{block}"


TINY = ("{name: vae, distribution: categorical, num_latents: 3, num_classes: 3, encoder: [8], "
        "decoder: [8], eval_samples: 2, eval_examples: 20, final_eval_samples: 2, "
        "final_eval_examples: 20}")


@pytest.mark.skipif(not MNIST.is_dir(), reason=f"MNIST not found at {MNIST}")
def test_learning_curves(figures, tmp_path, monkeypatch):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(MNIST))
  out = figures.learning_curves(
      tmp_path / "l.png", tmp_path / "run", steps=4, eval_every=2, estimators=("relaxed",),
      task=TINY, extra_overrides=("train.log_every=2", "train.batch_size=8"))
  _png(tmp_path / "l.png")
  assert list(out) == ["relaxed"]
  for r in out.values():  # the importance-weighted bound is the tighter one
    bound = r["final_neg_elbo"]
    assert np.isfinite(bound) and r["final_nll"] <= bound + f32_tol(bound, ulps=64)


def test_learning_curves_without_mnist(figures, tmp_path, monkeypatch):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(tmp_path / "empty"))
  with pytest.raises(SystemExit, match="GUMBAX_DATA_DIR"):
    figures.learning_curves(tmp_path / "l.png", tmp_path / "run", steps=2, eval_every=2,
                            estimators=("relaxed",), task=TINY,
                            extra_overrides=("train.log_every=2", "data.download=false"))
  assert not (tmp_path / "l.png").exists()
