"""Smoke tests: the benchmark scripts run end to end on tiny sizes and count right."""

import importlib
import pathlib

import pytest


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


# ---- the issue-7 goal scripts: tiny sizes, no torch (the tables' torch cells say "-") --


def _bench(monkeypatch, name):
  monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1]))
  return importlib.import_module(f"benchmarks.{name}")


def test_fwd_bwd_smoke(capsys, monkeypatch, tmp_path):
  bench = _bench(monkeypatch, "fwd_bwd")
  out_json = tmp_path / "rows.json"
  rows = bench.main(["--shapes", "64x10", "--functions", "gumbel_softmax_hard",
                     "--dtypes", "bfloat16", "--repeats", "1", "--min-time", "0",
                     "--variants", "lean", "--no-torch", "--json", str(out_json)])
  out = capsys.readouterr().out
  assert out.startswith("device: ") and "torch: not used" in out
  assert "| gumbel_softmax_hard | bfloat16 | (64, 10) |" in out
  (row,) = rows
  assert row["elements"] == 640 and "torch_s" not in row and "gumbax_rbg_s" not in row
  assert all(row[k] > 0 for k in ("gumbax_s", "hand_s", "lean_s", "copy_s"))
  # % of copy bandwidth: 10 bytes per bfloat16 element against the copy's 8.
  expected = 100 * 10 * row["copy_s"] / (8 * row["gumbax_s"])
  assert abs(row["gumbax_pct_copy"] - expected) < 1e-9
  assert out_json.exists()
  with pytest.raises(SystemExit):
    bench.main(["--functions", "gumbel_max", "--no-torch"])


def test_fwd_bwd_prototype_matches_gumbax():
  import jax
  import jax.numpy as jnp
  import numpy as np
  import gumbax
  from _tolerance import EPS32, assert_f32_close
  from benchmarks import _prototypes

  key = jax.random.key(3)
  logits = jnp.asarray(np.linspace(-3, 3, 35, dtype=np.float32).reshape(5, 7)).at[0, 2].set(-jnp.inf)
  cot = jnp.asarray(np.cos(np.arange(35.0)).reshape(5, 7), jnp.float32)
  cases = {"gumbel_softmax": lambda k, l: gumbax.gumbel_softmax(k, l, 0.5),
           "gumbel_softmax_hard": lambda k, l: gumbax.gumbel_softmax(k, l, 0.5, hard=True),
           "relaxed_bernoulli": lambda k, l: gumbax.relaxed_bernoulli(k, l, 0.5)}
  for name, ours in cases.items():
    y1, g1 = jax.jit(lambda l: (lambda y, pb: (y, pb(cot)[0]))(*jax.vjp(lambda l: ours(key, l), l)))(logits)
    lean = _prototypes.lean_fn(name, 0.5)
    y2, g2 = jax.jit(lambda l: (lambda y, pb: (y, pb(cot)[0]))(*jax.vjp(lambda l: lean(key, l), l)))(logits)
    # Two programs with the same arithmetic, but XLA may fuse (and so vectorize the
    # softmax's sum) differently on another CPU: samples in [0, 1] agree to a few ulps,
    # not bit for bit. The pullback y (c - sum y c) / tau cancels: ulps of max|c| / tau.
    assert_f32_close(y1, y2, 1.0, ulps=4, rtol=4 * EPS32)
    assert_f32_close(g1, g2, np.max(np.abs(np.asarray(cot))) / 0.5, ulps=16, rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(g2)))


def test_vae_step_smoke(capsys, monkeypatch):
  bench = _bench(monkeypatch, "vae_step")
  result = bench.main(["--small", "--seeds", "2", "--seed-implementations", "gumbax,flat",
                       "--repeats", "1", "--min-time", "0", "--no-torch"])
  out = capsys.readouterr().out
  assert "| gumbax nnx (jax.jit) |" in out and "| hand-written JAX | " in out
  assert set(result["single"]) == {"hand-written JAX", "gumbax nnx (jax.jit)",
                                   "gumbax nnx (jax.jit, flat state)", "gumbax nnx (nnx.jit)"}
  assert [r["implementation"] for r in result["seeds"]] == [
      "gumbax nnx (jax.jit)", "gumbax nnx (jax.jit, flat state)"]
  assert all(r["throughput_ratio"] > 0 for r in result["seeds"])


def test_vae_step_models_agree_in_structure():
  """The gumbax and hand-written steps train the same architecture (same parameter count)."""
  import jax
  import numpy as np
  from flax import nnx

  bench = importlib.import_module("benchmarks.vae_step")
  problem = ((16, (8,)), 2, 3, "relaxed")
  (params, _, _), step = bench.hand_setup(0, *problem)
  model, _ = bench.gumbax_model(0, *problem)
  count = lambda tree: sum(np.size(x) for x in jax.tree.leaves(tree))
  assert count(params) == count(nnx.state(model, nnx.Param))
  x = np.ones((4, 16), np.float32)
  state, loss = jax.jit(step)(bench.hand_setup(0, *problem)[0], x)
  assert np.isfinite(float(loss))


def test_vae_step_flat_state_is_the_same_step():
  """Holding the nnx state as flat leaves changes only the host side: same losses, same state."""
  import jax
  import numpy as np

  bench = importlib.import_module("benchmarks.vae_step")
  problem = ((16, (8,)), 2, 3, "relaxed")
  state, step = bench.gumbax_setup(0, *problem)
  leaves, flat_step = bench.gumbax_flat_setup(0, *problem)
  step, flat_step = jax.jit(step), jax.jit(flat_step)
  x = np.ones((4, 16), np.float32)
  for _ in range(3):
    state, loss = step(state, x)
    leaves, flat_loss = flat_step(leaves, x)
    np.testing.assert_array_equal(np.asarray(loss), np.asarray(flat_loss))
  def raw(a):  # typed PRNG keys (the layer's noise stream) compared by their bits
    is_key = jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
    return np.asarray(jax.random.key_data(a) if is_key else a)

  for a, b in zip(jax.tree.leaves(state), leaves, strict=True):
    np.testing.assert_array_equal(raw(a), raw(b))


def test_variance_smoke(capsys, monkeypatch):
  bench = _bench(monkeypatch, "variance")
  results = bench.main(["--small", "--repeats", "1", "--no-torch"])
  out = capsys.readouterr().out
  assert "| gradients |" in out and "| study |" in out
  for task in ("gradients", "study"):
    assert all(t > 0 for t in results[task].values())
  assert set(results["gradients"]) == {"gumbax", "gumbax (vmap)", "hand-written JAX"}
  assert set(results["study"]) == {"gumbax", "hand-written JAX"}


def test_statistics_smoke(capsys, monkeypatch):
  bench = _bench(monkeypatch, "statistics")
  original = bench.diagnostics.merge_chunk
  rows = bench.main(["--samples", "4", "--shape", "3x2", "--repeats", "1"])
  assert bench.diagnostics.merge_chunk is original  # restored after compiling
  out = capsys.readouterr().out
  assert "| moments |" in out and "| gradient_statistics |" in out
  assert all(t > 0 for row in rows.values() for t in row.values())


def test_relaxed_top_k_benchmark_smoke(capsys, monkeypatch, tmp_path):
  bench = _bench(monkeypatch, "relaxed_top_k")
  out_json = tmp_path / "rows.json"
  rows = bench.main(["--cases", "8x12:3", "--repeats", "1", "--min-time", "0",
                     "--json", str(out_json)])
  out = capsys.readouterr().out
  assert out.startswith("device: ") and "| (8, 12) | 3 |" in out
  (row,) = rows
  assert all(row[f"{c}_s"] > 0 for c in bench.COLUMNS)
  assert abs(row["ratio"] - row["gumbax_s"] / min(row["hand_scan_s"], row["hand_loop_s"])) < 1e-12
  assert out_json.exists()
  # The hand-written relaxation is the same computation as gumbax's (away from the
  # hard limit, where its log(max(1 - p, tiny)) saturates), so the timing compares
  # like with like.
  import jax
  import numpy as np
  key, logits = jax.random.key(0), jax.random.normal(jax.random.key(1), (8, 12))
  want = np.asarray(bench.gumbax_fn(3)(key, logits))
  for make in (bench.hand_scan_fn, bench.hand_loop_fn):
    np.testing.assert_allclose(np.asarray(make(3)(key, logits)), want, rtol=1e-5, atol=1e-5)
  with pytest.raises(SystemExit):
    bench.main(["--cases", "8x12:13"])
