"""Variance studies: closed-form variance, chunking and sharding do not change results."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy import stats

from _tolerance import assert_f32_close
from experiments import cli
from experiments import config as cfg_lib
from experiments import variance

ROOT = pathlib.Path(__file__).resolve().parents[2]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
ALPHA = 1e-6  # false-failure rate of the statistical assertion

TOY = """
name: vt
task: {name: toy, distribution: bernoulli, target: 0.45, init_logit: 0.7}
optimizer: {learning_rate: 0.05}
train: {steps: 20, log_every: 10}
variance: {train_estimator: exact, checkpoints: [0, 20], num_samples: 20000, chunk_size: 5000}
sweep: {estimators: [reinforce, relaxed]}
"""


def _load(tmp_path, text, overrides=()):
  (tmp_path / "v.yaml").write_text(text)
  return cfg_lib.load(tmp_path / "v.yaml", list(overrides))


def _reinforce_moments(theta, t):
  """Mean, variance and 4th central moment of g = f(b)(b - p), f(b) = (b - t)^2."""
  p = 1 / (1 + np.exp(-theta))
  values = np.array([(0 - t) ** 2 * (0 - p), (1 - t) ** 2 * (1 - p)])
  probs = np.array([1 - p, p])
  mean = probs @ values
  var = probs @ (values - mean) ** 2
  mu4 = probs @ (values - mean) ** 4
  return mean, var, mu4


def test_reinforce_variance_matches_closed_form_and_outputs(tmp_path):
  summary = variance.run_variance(_load(tmp_path, TOY), tmp_path / "out", progress=False)
  rows = {(r["step"], r["estimator"]): r for r in summary["rows"]}
  n = 20000
  mean, var, mu4 = _reinforce_moments(0.7, 0.45)
  # The sample variance has variance (mu4 - var^2 (n-3)/(n-1)) / n; z at ALPHA two-sided.
  tolerance = stats.norm.isf(ALPHA / 2) * np.sqrt((mu4 - var ** 2 * (n - 3) / (n - 1)) / n)
  measured = rows[(0, "reinforce")]["total_variance"]
  assert abs(measured - var) < tolerance, (measured, var, tolerance)
  # REINFORCE is unbiased: its squared bias is noise of order var / n; relaxed is biased.
  assert rows[(0, "reinforce")]["squared_bias"] < 25 * var / n
  assert rows[(0, "relaxed")]["debiased_squared_bias"] > 100 * rows[(0, "relaxed")]["total_variance"] / n
  assert rows[(0, "reinforce")]["reference"] == "exact"
  # Training moved the parameters between checkpoints, so the variance changed.
  assert rows[(20, "reinforce")]["total_variance"] != measured
  out = tmp_path / "out"
  for name in ("summary.json", "variance.jsonl", "table_step0.md", "table_step20.csv",
               "plots/variance.png"):
    assert (out / name).exists(), name
  assert len((out / "table_step20.md").read_text().splitlines()) == 2 + 2 + 2
  assert json.loads((out / "summary.json").read_text())["checkpoints"] == [0, 20]


def test_chunking_does_not_change_the_numbers(tmp_path):
  small = "variance.chunk_size=7"
  a = variance.run_variance(_load(tmp_path, TOY, ["variance.num_samples=500", small,
                                                  "variance.checkpoints=[0]"]),
                            tmp_path / "a", progress=False)
  b = variance.run_variance(_load(tmp_path, TOY, ["variance.num_samples=500",
                                                  "variance.chunk_size=500", "variance.checkpoints=[0]"]),
                            tmp_path / "b", progress=False)
  for ra, rb in zip(a["rows"], b["rows"]):
    # Chunks of 7 against one of 500 reorder float32 sums of gradient samples of size
    # ~S = sqrt(mse) + |reference|, so the mean (and the bias) moves by ~eps32 * S and a
    # squared norm v of it by ~2 sqrt(v) eps32 * S: a small squared bias (bias << S) needs
    # that atol, not a bare rtol. The cosine averages ratios in [-1, 1]: scale 1.
    ref_norm = np.sqrt(sum(v ** 2 for k, v in rb.items() if k.startswith("reference_norm/")))
    grad_scale = np.sqrt(rb["mse"]) + ref_norm
    for key in ("total_variance", "squared_bias", "mse", "cosine"):
      scale = 1.0 if key == "cosine" else 2 * np.sqrt(rb[key]) * grad_scale
      assert_f32_close(ra[key], rb[key], scale, ulps=64, rtol=1e-5, err_msg=key)


def test_variance_config_errors(tmp_path):
  with pytest.raises(cfg_lib.ConfigError, match="multiples of train.log_every"):
    variance.run_variance(_load(tmp_path, TOY, ["variance.checkpoints=[5]"]), tmp_path / "x")
  with pytest.raises(cfg_lib.ConfigError, match="one task at one seed"):
    variance.run_variance(_load(tmp_path, TOY, ["sweep.seeds=[0,1]"]), tmp_path / "x")
  vae = ("name: vs\ntask: {name: vae}\ntrain: {steps: 20, log_every: 10}\n"
         "sweep: {estimators: [straight_through, {name: straight_through, label: sloped, "
         "temperature: {schedule: exponential, slope: true}}]}\n")
  with pytest.raises(cfg_lib.ConfigError, match=r"slope annealing \(sloped"):
    variance.run_variance(_load(tmp_path, vae), tmp_path / "x")
  with pytest.raises(cfg_lib.ConfigError, match=r"slope annealing \(trainer"):
    variance.run_variance(_load(tmp_path, vae, [
        "sweep.estimators=[straight_through]",
        "variance.train_estimator={name: straight_through, label: trainer, "
        "temperature: {schedule: exponential, slope: true}}"]), tmp_path / "x")


@pytest.mark.skipif(not MNIST.is_dir(), reason=f"MNIST not found at {MNIST}")
def test_vae_study_sharded_equals_unsharded(tmp_path):
  text = """
name: vv
task: {name: vae, distribution: categorical, num_latents: 3, num_classes: 4, encoder: [16], decoder: [16]}
train: {steps: 10, batch_size: 8, log_every: 10}
data: {train_examples: 256, validation_size: 0, download: false}
variance: {train_estimator: relaxed, checkpoints: [0, 10], num_samples: 64, chunk_size: 32,
           reference_estimator: {name: rloo, options: {num_samples: 2}}, reference_samples: 128}
sweep: {estimators: [straight_through_gumbel]}
"""
  path = tmp_path / "vv.yaml"
  path.write_text(text)
  env = dict(os.environ, PYTHONPATH=str(ROOT), GUMBAX_DATA_DIR=str(MNIST),
             XLA_FLAGS=os.environ.get("GUMBAX_TEST_XLA_FLAGS", "")
             + " --xla_force_host_platform_device_count=4")
  subprocess.run([sys.executable, "-m", "experiments", "variance", str(path), "--out",
                  str(tmp_path / "sharded"), "--no-progress"], check=True, capture_output=True,
                 cwd=tmp_path, env=env)
  os.environ["GUMBAX_DATA_DIR"] = str(MNIST)
  try:
    assert cli.main(["variance", str(path), "--out", str(tmp_path / "plain"), "--no-progress"]) == 0
  finally:
    del os.environ["GUMBAX_DATA_DIR"]
  sharded = json.loads((tmp_path / "sharded" / "summary.json").read_text())
  plain = json.loads((tmp_path / "plain" / "summary.json").read_text())
  assert sharded["devices"] == 4 and plain["devices"] == jax.device_count()
  for rs, rp in zip(sharded["rows"], plain["rows"]):
    assert (rs["step"], rs["estimator"]) == (rp["step"], rp["estimator"])
    assert rp["reference"] == "rloo(num_samples=2) x 128" and rp["reference_se2"] > 0
    assert {"variance/encoder", "variance/decoder"} <= set(rp)
    np.testing.assert_allclose(rp["variance/encoder"] + rp["variance/decoder"],
                               rp["total_variance"], rtol=1e-4)
    for group in ("encoder", "decoder"):
      assert -1.0 <= rp[f"mean_cosine/{group}"] <= 1.0 and rp[f"reference_norm/{group}"] > 0
    np.testing.assert_allclose(rp["squared_bias/encoder"] + rp["squared_bias/decoder"],
                               rp["squared_bias"], rtol=1e-4)
    # Sharded over 4 devices: float32 sums in another order. As in
    # test_chunking_does_not_change_the_numbers: a squared norm v of a mean of gradients of
    # size S moves by ~2 sqrt(v) eps32 * S; cosines are bounded by 1.
    grad_scale = np.sqrt(rp["mse"]) + np.sqrt(
        sum(v ** 2 for k, v in rp.items() if k.startswith("reference_norm/")))
    for key in ("total_variance", "squared_bias", "cosine", "mean_cosine/encoder"):
      scale = 1.0 if "cosine" in key else 2 * np.sqrt(rp[key]) * grad_scale
      assert_f32_close(rs[key], rp[key], scale, ulps=64, rtol=1e-4, err_msg=key)
