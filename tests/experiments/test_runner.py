"""End-to-end runs of tiny configs: outputs, determinism, resume, NaN, sharding, fallback."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from experiments import cli
from experiments import config as cfg_lib
from experiments import data as data_lib
from experiments import files
from experiments import layer_variance
from experiments import runner

ROOT = pathlib.Path(__file__).resolve().parents[2]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason=f"MNIST not found at {MNIST}")

TOY = """
name: toy_test
task: {name: toy, target: 0.45, variance_samples: 16}
optimizer: {learning_rate: 0.1}
train: {steps: 40, log_every: 10, eval_every: 20, checkpoint_every: 20}
sweep: {estimators: [exact, reinforce], seeds: [0, 1]}
"""


def _config(tmp_path, text, overrides=(), name="c.yaml"):
  path = tmp_path / name
  path.write_text(text)
  return cfg_lib.load(path, list(overrides))


def _rows(run_dir):
  """Every metrics row of every member, without the wall time, keyed by member."""
  out = {}
  for folder in sorted((pathlib.Path(run_dir) / "members").iterdir()):
    out[folder.name] = [{k: v for k, v in r.items() if k != "wall_time"}
                        for r in files.read_jsonl(folder / "metrics.jsonl")]
  return out


def _summaries(run_dir):
  return {p.parent.name: json.loads(p.read_text())
          for p in (pathlib.Path(run_dir) / "members").glob("*/summary.json")}


def _env(**extra):
  env = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
  env["XLA_FLAGS"] = os.environ.get("GUMBAX_TEST_XLA_FLAGS", "")  # one CPU device
  env.update(extra)
  return env


def test_toy_sweep_writes_every_output_and_learns(tmp_path):
  run_dir = tmp_path / "run"
  assert cli.main(["run", str(tmp_path / "x.yaml")]) == 2  # missing file: exit status 2
  (tmp_path / "toy.yaml").write_text(TOY)
  assert cli.main(["run", str(tmp_path / "toy.yaml"), "--out", str(run_dir), "--no-progress"]) == 0
  assert (run_dir / "config.yaml").exists()
  summaries = _summaries(run_dir)
  assert sorted(summaries) == ["toy-bernoulli-t0.45-exact-seed0", "toy-bernoulli-t0.45-exact-seed1",
                               "toy-bernoulli-t0.45-reinforce-seed0", "toy-bernoulli-t0.45-reinforce-seed1"]
  for member, summary in summaries.items():
    assert summary["status"] == "completed" and summary["steps"] == 40
    rows = files.read_jsonl(run_dir / "members" / member / "metrics.jsonl")
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [10, 20, 30, 40]
    assert all(np.isfinite(r["grad_variance"]) and r["grad_variance"] >= 0 for r in train)
    assert [r["step"] for r in rows if r["split"] == "exact"] == [20, 40]
    assert set(summary["final"]) == {"train/loss", "exact/loss", "exact/p_best"}
  # The exact gradient moves the probability of the better outcome (b = 0 for t = 0.45) up.
  exact = summaries["toy-bernoulli-t0.45-exact-seed0"]["final"]
  assert exact["exact/p_best"] > 0.9 and exact["exact/loss"] < 0.21
  # Exact gradients do not depend on the seed; REINFORCE's do.
  assert exact == summaries["toy-bernoulli-t0.45-exact-seed1"]["final"]
  rf = [summaries[f"toy-bernoulli-t0.45-reinforce-seed{s}"]["final"]["exact/p_best"] for s in (0, 1)]
  assert rf[0] != rf[1]
  table = (run_dir / "table.md").read_text().splitlines()
  assert len(table) == 4 and "exact/p_best" in table[0]
  assert (run_dir / "table.csv").exists()
  assert (run_dir / "plots" / "learning_curves_toy-bernoulli-t0.45.png").stat().st_size > 10_000
  assert (run_dir / "plots" / "gradient_variance_toy-bernoulli-t0.45.png").exists()
  # Same config and seeds, another folder: the same numbers.
  runner.run(cfg_lib.load(tmp_path / "toy.yaml"), tmp_path / "again", progress=False)
  assert _rows(tmp_path / "again") == _rows(run_dir)
  # Running again on a finished folder changes nothing; another config there is refused.
  before = _rows(run_dir)
  runner.run(cfg_lib.load(tmp_path / "toy.yaml"), run_dir, progress=False)
  assert _rows(run_dir) == before
  assert cli.main(["run", str(run_dir), "--no-progress"]) == 0  # resume by folder
  assert _rows(run_dir) == before
  # --select adds the per-estimator choice of rate to the report (one rate here: both rows).
  assert cli.main(["run", str(run_dir), "--no-progress", "--select", "exact/loss"]) == 0
  assert len((run_dir / "selected.md").read_text().splitlines()) == 4
  assert cli.main(["run", str(run_dir), "--no-report", "--select", "exact/loss"]) == 2
  # A folder whose config.yaml lacks a field added later (with its default) still resumes.
  saved = yaml.safe_load((run_dir / "config.yaml").read_text())
  del saved["estimator"]["optimizer"], saved["variance"]
  (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
  runner.run(cfg_lib.load(tmp_path / "toy.yaml"), run_dir, progress=False)
  assert _rows(run_dir) == before
  with pytest.raises(cfg_lib.ConfigError, match="different config"):
    runner.run(cfg_lib.load(tmp_path / "toy.yaml", ["train.steps=80"]), run_dir, progress=False)


def test_an_estimator_entry_trains_with_its_own_optimizer(tmp_path):
  config = _config(tmp_path, TOY, ["sweep.seeds=[0]", "sweep.estimators=[exact, "
                                   "{name: exact, label: decayed, optimizer: {decay_rate: 0.5, decay_steps: 10}}]"])
  runner.run(config, tmp_path / "run", progress=False)
  rows = _rows(tmp_path / "run")
  lr = {m: [r["learning_rate"] for r in rs if r["split"] == "train"] for m, rs in rows.items()}
  # Logged at steps 10..40 with the rate of the chunk's last step (9, 19, 29, 39).
  np.testing.assert_allclose(lr["toy-bernoulli-t0.45-exact-seed0"], [0.1] * 4, rtol=1e-6)
  np.testing.assert_allclose(lr["toy-bernoulli-t0.45-decayed-seed0"], [0.1, 0.05, 0.025, 0.0125], rtol=1e-6)
  final = {m: s["final"]["exact/loss"] for m, s in _summaries(tmp_path / "run").items()}
  assert final["toy-bernoulli-t0.45-decayed-seed0"] > final["toy-bernoulli-t0.45-exact-seed0"]


def test_nan_loss_stops_that_member_and_keeps_its_metrics(tmp_path, capsys):
  config = _config(tmp_path, """
name: nan_test
task: {name: toy}
estimator: reinforce
train: {steps: 30, log_every: 10, eval_every: 0, checkpoint_every: 10}
sweep: {tasks: [{name: toy, target: .nan}, {name: toy, target: 0.45}]}
""")
  runner.run(config, tmp_path / "run", progress=False)
  summaries = _summaries(tmp_path / "run")
  bad = summaries["toy-bernoulli-tnan-reinforce-seed0"]
  assert bad["status"] == "nan" and "nan at step 1" in bad["message"]
  assert "metrics.jsonl" in bad["message"] and "nan at step 1" in capsys.readouterr().err
  rows = files.read_jsonl(tmp_path / "run" / "members" / bad["member"] / "metrics.jsonl")
  # Strict JSON: the NaN loss is null and named in "nonfinite"; a parser that
  # refuses NaN/Infinity (as jq does) reads every line.
  assert [r["step"] for r in rows] == [10] and rows[0]["loss"] is None
  assert rows[0]["nonfinite"]["loss"] == "nan"
  assert all(rows[0][k] is None for k in rows[0]["nonfinite"])
  text = (tmp_path / "run" / "members" / bad["member"] / "metrics.jsonl").read_text()
  for line in text.splitlines():
    json.loads(line, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
  assert summaries["toy-bernoulli-t0.45-reinforce-seed0"]["status"] == "completed"


def test_resume_after_kill_gives_the_uninterrupted_numbers(tmp_path):
  text = """
name: resume_test
task: {name: toy, target: 0.499, variance_samples: 2}
estimator: {name: reinforce, options: {baseline: ema}}
optimizer: {learning_rate: 0.05}
train: {steps: 30000, log_every: 10, eval_every: 0, checkpoint_every: 200}
"""
  (tmp_path / "r.yaml").write_text(text)
  run_dir = tmp_path / "killed"
  member = run_dir / "members" / "toy-bernoulli-t0.499-reinforce_baseline=ema-seed0"
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments", "run", str(tmp_path / "r.yaml"), "--out", str(run_dir),
       "--no-progress", "--no-report"], cwd=tmp_path, env=_env(),
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 240
  while time.monotonic() < deadline and proc.poll() is None:
    if len(files.checkpoint_steps(member)) >= 2 and len(files.read_jsonl(member / "metrics.jsonl")) > 45:
      break
    time.sleep(0.05)
  assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read().decode()}"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc.stderr.close()
  assert json.loads((member / "summary.json").read_text())["status"] == "running"
  written = len(files.read_jsonl(member / "metrics.jsonl"))
  config = cfg_lib.load(tmp_path / "r.yaml")
  runner.run(config, run_dir, progress=False)
  assert json.loads((member / "summary.json").read_text())["status"] == "completed"
  runner.run(config, tmp_path / "straight", progress=False)
  resumed, straight = _rows(run_dir), _rows(tmp_path / "straight")
  assert len(straight[member.name]) == 3001 and written < 3000  # 3000 train rows, 1 final eval
  assert resumed == straight


def test_missing_mnist_falls_back_or_fails_clearly(tmp_path, monkeypatch):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(tmp_path / "empty"))
  text = """
name: fallback
estimator: straight_through
train: {steps: 10, log_every: 10, eval_every: 0, checkpoint_every: 10, batch_size: 4}
data: {download: false, if_missing: skip}
sweep: {tasks: [{name: toy}, {name: vae}]}
"""
  runner.run(_config(tmp_path, text), tmp_path / "run", progress=False)
  assert [s["task"] for s in _summaries(tmp_path / "run").values()] == ["toy-bernoulli-t0.45"]
  with pytest.raises(data_lib.MnistNotFoundError, match="GUMBAX_DATA_DIR"):
    runner.run(_config(tmp_path, text, ["data.if_missing=error"], "d.yaml"), tmp_path / "run2",
               progress=False)


@needs_mnist
def test_vae_sharded_and_vectorized_equals_plain(tmp_path, monkeypatch):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(MNIST))
  tiny = ROOT / "configs" / "tests" / "vae_tiny.yaml"
  subprocess.run(
      [sys.executable, "-m", "experiments", "run", str(tiny), "seeds_vectorized=true",
       "sweep.seeds=[0,1]", "--out", str(tmp_path / "sharded"), "--no-progress", "--no-report"],
      cwd=tmp_path, check=True, capture_output=True,
      env=_env(GUMBAX_DATA_DIR=str(MNIST), XLA_FLAGS=os.environ.get("GUMBAX_TEST_XLA_FLAGS", "")
               + " --xla_force_host_platform_device_count=4"))
  runner.run(cfg_lib.load(tiny, ["sweep.seeds=[0,1]"]), tmp_path / "plain", progress=False)
  sharded, plain = _rows(tmp_path / "sharded"), _rows(tmp_path / "plain")
  assert sorted(sharded) == sorted(plain) and len(plain) == 2
  for member in plain:
    assert [(r["step"], r["split"]) for r in sharded[member]] == [(r["step"], r["split"]) for r in plain[member]]
    for a, b in zip(sharded[member], plain[member]):
      for key in ("loss", "nll", "neg_elbo"):
        if key in b:
          np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=f"{member} {key}")
    assert _summaries(tmp_path / "sharded")[member]["devices"] == 4
    losses = [r["loss"] for r in plain[member] if r["split"] == "train"]
    assert losses[-1] < losses[0]  # it learns
    final = _summaries(tmp_path / "plain")[member]["final"]
    assert final["test/nll"] < final["test/neg_elbo"] + 1.0  # the IW bound is the tighter one


@needs_mnist
def test_structured_output_end_to_end(tmp_path, monkeypatch):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(MNIST))
  # NVIL trains a control variate (baseline network and running statistics), which
  # the benchmark's ``trained`` row reads back below.
  config = cfg_lib.load(ROOT / "configs" / "tests" / "structured_tiny.yaml",
                        ["estimator={name: reinforce, options: {baseline: nvil}}"])
  runner.run(config, tmp_path / "run", progress=False)
  (summary,) = _summaries(tmp_path / "run").values()
  assert summary["status"] == "completed"
  rows = files.read_jsonl(tmp_path / "run" / "members" / summary["member"] / "metrics.jsonl")
  nll = [r["nll"] for r in rows if r["split"] == "test"]
  assert len(nll) == 2 and all(np.isfinite(nll)) and 0 < nll[-1] < 392 * np.log(2)

  # The per-layer variance study reads this member's checkpoint.
  out = tmp_path / "variance.json"
  assert cli.main(["layer-variance", str(tmp_path / "run" / "members" / summary["member"]),
                   "--keys", "8", "--estimators", "muprop", "straight_through",
                   "muprop:mean_field=false", "trained", "reinforce:baseline=nvil",
                   "--json", str(out)]) == 0
  stats = json.loads(out.read_text())["stats"]
  # ``trained``: the member's estimator with its checkpoint's control variate, which
  # differs from the one ``init`` gives; the output layer's gradient does not use it.
  trained, fresh = stats["trained reinforce"], stats["reinforce:baseline=nvil"]
  assert trained["layer 1"][0] != fresh["layer 1"][0]
  np.testing.assert_allclose(trained["output"], fresh["output"], rtol=1e-5)
  assert set(stats["muprop"]) == {"layer 1", "layer 2", "output"}
  assert all(v[0] > 0 and np.isfinite(v[1]) for row in stats.values() for v in row.values())
  # Both estimators backpropagate through the same sample (same key) into the output
  # layer, so its gradients, and their variance, agree; the stochastic layers' do not.
  np.testing.assert_allclose(stats["muprop"]["output"], stats["straight_through"]["output"],
                             rtol=1e-5)
  assert stats["muprop"]["layer 1"][0] != stats["straight_through"]["layer 1"][0]
  # The mean-field expansion changes layer 1's control variate only.
  sampled = stats["muprop:mean_field=false"]
  assert sampled["layer 1"][0] != stats["muprop"]["layer 1"][0]
  np.testing.assert_allclose(sampled["layer 2"], stats["muprop"]["layer 2"], rtol=1e-5)
  with pytest.raises(ValueError, match="key=value"):
    layer_variance.parse_estimator("muprop:mean_field", "bernoulli")
  # A bad member folder or spec is one error line with exit status 2.
  assert cli.main(["layer-variance", str(tmp_path / "run"), "--keys", "8"]) == 2
  assert cli.main(["layer-variance", str(tmp_path / "run" / "members" / summary["member"]),
                   "--keys", "8", "--estimators", "muprop:mean_field"]) == 2


def test_cli_list_and_help(capsys):
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  assert "quickstart.yaml" in out and "disarm" in out and "structured_output" in out
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--help"])
  assert exit_info.value.code == 0
  assert "key=value" in capsys.readouterr().out
