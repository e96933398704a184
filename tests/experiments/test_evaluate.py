"""`python -m experiments evaluate`: finished members evaluated again from their checkpoints."""

import json
import pathlib
import shutil

import jax
from jax.sharding import Mesh
import numpy as np
import pytest

from experiments import cli
from experiments import config as cfg_lib
from experiments import evaluate
from experiments import files
from experiments import report as rp
from experiments import runner
from experiments.program import Program, evaluation_key
from experiments.tasks import make_task

ROOT = pathlib.Path(__file__).resolve().parents[2]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason=f"MNIST not found at {MNIST}")
TINY = ROOT / "configs" / "tests" / "vae_tiny.yaml"


def _summary(run_dir):
  (path,) = (pathlib.Path(run_dir) / "members").glob("*/summary.json")
  return path.parent, json.loads(path.read_text())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """One finished tiny VAE member (m = 8 in its final evaluation, 64 test images)."""
  mp = pytest.MonkeyPatch()
  mp.setenv("GUMBAX_DATA_DIR", str(MNIST))
  run_dir = tmp_path_factory.mktemp("evaluate") / "run"
  runner.run(cfg_lib.load(TINY), run_dir, progress=False)
  mp.undo()
  return run_dir


@pytest.fixture
def run_copy(tiny_run, tmp_path, monkeypatch):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(MNIST))
  return pathlib.Path(shutil.copytree(tiny_run, tmp_path / "run"))


@needs_mnist
def test_the_runs_own_m_reproduces_its_final_metrics(run_copy):
  folder, before = _summary(run_copy)
  assert before["final_eval_samples"] == {"valid": 8, "test": 8}
  rows_before = files.read_jsonl(folder / "metrics.jsonl")
  result = evaluate.evaluate_run(run_copy, 8)
  assert result == {"evaluated": [folder.name], "skipped": []}
  _, after = _summary(run_copy)
  assert set(after["final"]) == set(before["final"])
  for name, value in before["final"].items():
    np.testing.assert_allclose(after["final"][name], value, rtol=1e-6, err_msg=name)
  assert after["final_eval_samples"] == {"valid": 8, "test": 8}
  (record,) = after["evaluations"]
  assert record["samples"] == 8 and record["splits"] == ["valid", "test"]
  rows = files.read_jsonl(folder / "metrics.jsonl")
  assert rows[:len(rows_before)] == rows_before  # the earlier rows stay
  new = rows[len(rows_before):]
  assert [(r["split"], r["step"], r["iw_samples"]) for r in new] == [("valid", 20, 8), ("test", 20, 8)]
  assert all(r["reevaluated"] == record["time"] for r in new)


@needs_mnist
def test_more_samples_on_one_split(run_copy):
  folder, before = _summary(run_copy)
  evaluate.evaluate_run(run_copy, 200, ["test"])
  _, after = _summary(run_copy)
  assert after["final_eval_samples"] == {"valid": 8, "test": 200}
  for name, value in before["final"].items():
    if not name.startswith("test/"):
      assert after["final"][name] == value, name
  # A new draw of the m samples changes the bound; the exact KL does not move.
  assert after["final"]["test/nll"] != before["final"]["test/nll"]
  np.testing.assert_allclose(after["final"]["test/kl"], before["final"]["test/kl"], rtol=1e-6)
  # The -ELBO is a mean over the m samples, so it sits within the m = 8 run's spread.
  assert abs(after["final"]["test/neg_elbo"] - before["final"]["test/neg_elbo"]) < 5.0
  header, rows = rp.comparison_table(rp.load_run(run_copy))
  assert dict(zip(header, rows[0]))["eval samples (m)"] == "test 200, valid 8"
  # The learning curve ends at the new value: the later row of a step wins.
  (member,) = rp.load_run(run_copy)
  assert rp.series(member, "test", "nll")[20] == after["final"]["test/nll"]
  # A summary written before the m was recorded: the other split keeps the config's m.
  del after["final_eval_samples"]
  files.write_json(folder / "summary.json", after)
  evaluate.evaluate_run(run_copy, 100, ["test"])
  assert _summary(run_copy)[1]["final_eval_samples"] == {"valid": 8, "test": 100}


@needs_mnist
def test_unfinished_members_and_bad_input(run_copy, tmp_path):
  folder, summary = _summary(run_copy)
  with pytest.raises(ValueError, match="no split 'train'; its task has valid, test"):
    evaluate.evaluate_run(run_copy, 10, ["train"])
  for bad in (0, -3, 2.5, True):
    with pytest.raises(ValueError, match="positive integer"):
      evaluate.evaluate_run(run_copy, bad)
  with pytest.raises(ValueError, match="not a run folder"):
    evaluate.evaluate_run(tmp_path / "nowhere", 10)
  summary["status"] = "running"
  files.write_json(folder / "summary.json", summary)
  result = evaluate.evaluate_run(run_copy, 10)
  assert result["evaluated"] == [] and "its status is 'running'" in result["skipped"][0]
  summary["status"] = "completed"
  files.write_json(folder / "summary.json", summary)
  for path in folder.glob("checkpoint-20.msgpack"):
    path.unlink()
  result = evaluate.evaluate_run(run_copy, 10)
  assert result["evaluated"] == [] and "no checkpoint at its final step 20" in result["skipped"][0]


def test_an_exact_evaluation_is_refused(tmp_path):
  path = tmp_path / "toy.yaml"
  path.write_text("name: toy\ntask: {name: toy, target: 0.45}\n"
                  "train: {steps: 10, log_every: 5, eval_every: 0, checkpoint_every: 10}\n")
  runner.run(cfg_lib.load(path), tmp_path / "run", progress=False)
  (summary,) = [json.loads(p.read_text()) for p in (tmp_path / "run").glob("members/*/summary.json")]
  assert "final_eval_samples" not in summary and "exact/loss" in summary["final"]
  with pytest.raises(ValueError, match="the toy task's evaluation draws no samples"):
    evaluate.evaluate_run(tmp_path / "run", 10)


@needs_mnist
def test_cli_evaluate(run_copy, tmp_path, capsys):
  assert cli.main(["evaluate", str(run_copy), "--samples", "16", "--splits", "test"]) == 0
  out = capsys.readouterr()
  assert "evaluated 1 member(s) with m = 16" in out.err and "test/nll" in out.out
  assert "| test 16, valid 8 |" in (run_copy / "table.md").read_text()
  assert cli.main(["evaluate", str(tmp_path / "nowhere"), "--samples", "16"]) == 2
  assert "not a run folder" in capsys.readouterr().err
  assert cli.main(["evaluate", str(run_copy), "--samples", "4", "--splits", "train"]) == 2
  for bad in ("0", "many"):
    with pytest.raises(SystemExit):
      cli.main(["evaluate", str(run_copy), "--samples", bad])
    assert "is not a positive integer" in capsys.readouterr().err


@needs_mnist
def test_structured_output_reproduces_too(tmp_path, monkeypatch):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(MNIST))
  runner.run(cfg_lib.load(ROOT / "configs" / "tests" / "structured_tiny.yaml"), tmp_path / "run",
             progress=False)
  _, before = _summary(tmp_path / "run")
  assert evaluate.evaluate_run(tmp_path / "run", before["final_eval_samples"]["test"], ["test"])[
      "evaluated"]
  _, after = _summary(tmp_path / "run")
  for name in ("test/nll", "test/single_sample_nll"):
    np.testing.assert_allclose(after["final"][name], before["final"][name], rtol=1e-6, err_msg=name)


@needs_mnist
def test_a_slope_annealed_run_is_evaluated_at_its_last_temperature(tmp_path, monkeypatch):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(MNIST))
  config = cfg_lib.load(TINY, ["estimator=straight_through", "temperature.slope=true"])
  runner.run(config, tmp_path / "run", progress=False)
  folder, before = _summary(tmp_path / "run")
  assert evaluate.evaluate_run(tmp_path / "run", 8)["evaluated"] == [folder.name]
  _, after = _summary(tmp_path / "run")
  for name, value in before["final"].items():
    np.testing.assert_allclose(after["final"][name], value, rtol=1e-6, err_msg=name)
  # tau of the last step (19): exp(-0.01 * 10), updated every 10 steps.
  member = cfg_lib.load(folder / "config.yaml")
  task = make_task(member)
  tau = Program(member, task, Mesh(np.array(jax.devices()), ("data",))).evaluation_temperature(20)
  np.testing.assert_allclose(tau, np.exp(-0.1), rtol=1e-6)
  params = files.load_params(folder, 20, task.init(jax.random.key(0)))
  key = evaluation_key(jax.random.key(member.seed), 20, "test")
  at_tau = task.evaluate(params, key, "test", 8, final=True, temperature=tau)
  at_one = task.evaluate(params, key, "test", 8, final=True, temperature=1.0)
  np.testing.assert_allclose(at_tau["neg_elbo"], before["final"]["test/neg_elbo"], rtol=1e-6)
  assert abs(at_one["kl"] - at_tau["kl"]) > 1e-4  # the temperature reaches q
