"""Smoke test: benchmarks/estimators.py runs end to end on tiny sizes and counts right."""

import importlib
import pathlib


def test_estimator_benchmark_smoke(capsys, monkeypatch):
  monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1]))
  bench = importlib.import_module("benchmarks.estimators")
  results = bench.main([
      "--repeats", "1", "--min-time", "0", "--problems", "toy,vae",
      "--estimators", "relaxed,reinforce num_samples=4",
      "--batch", "4", "--latents", "2x3", "--hidden", "8,12", "--pixels", "16"])
  out = capsys.readouterr().out
  assert out.startswith("device: ")
  assert "### toy" in out and "### vae" in out and "gumbax vs hand-written" in out
  for problem in ("toy", "vae"):
    rows = {row["label"]: row for row in results[problem]}
    assert set(rows) == {"relaxed", "reinforce num_samples=4"}
    assert rows["relaxed"]["traced"] == 1
    # k samples: k evaluations of f, from one (vectorized) Python call besides the
    # eval_shape check.
    assert rows["reinforce num_samples=4"]["traced"] == 4
    assert rows["reinforce num_samples=4"]["python"] == 2
    assert all(row["ms"] > 0 for row in rows.values())
  vae = {row["label"]: row for row in results["vae"]}
  assert vae["reinforce num_samples=4"]["compiled"] == "4 in 1 matmul"
  assert vae["relaxed"]["compiled"] == "1 in 1 matmul"
  assert vae["relaxed"]["logits"] == "categorical (4, 2, 3)"
  # The jaxpr count equals the number of evaluations the jitted gradient executes.
  problem = bench.vae_problem(4, (2, 3), (8, 12), 16)
  logits = problem.logits("categorical")
  est = bench.estimators.get("reinforce", num_samples=3)
  args = (logits, problem.params, bench.jax.random.key(0), {}, problem.data)
  assert bench.count_traced_evaluations(est, problem, args, logits.shape) == 3
  assert bench.count_executed_evaluations(est, problem, args, logits.shape) == 3
  assert [(name, f) for name, f, _ in results["compare"]] == [
      ("relaxed", "MLP decoder"), ("relaxed", "linear")]
