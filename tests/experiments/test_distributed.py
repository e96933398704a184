"""Runs of several processes: two processes on 127.0.0.1, one CPU device each (gloo)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import cli
from experiments import config as cfg_lib
from experiments import distributed
from experiments import files
from experiments import runner
from tests._tolerance import assert_f32_close

ROOT = pathlib.Path(__file__).resolve().parents[2]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason=f"MNIST not found at {MNIST}")
TINY = ROOT / "configs" / "tests" / "vae_tiny.yaml"
# Long enough to kill the processes between two checkpoints.
OVERRIDES = ["train.steps=100", "train.eval_every=50", "train.checkpoint_every=10"]
# The config's own 20 steps: what the default test run can afford.
SHORT = ["train.steps=20"]
MEMBER = "vae-categorical-4x3-straight_through_gumbel-seed0"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(out: pathlib.Path, cwd: pathlib.Path, *extra: str, processes: int = 2,
            overrides=OVERRIDES):
  """Starts ``processes`` processes of one run of the tiny VAE into ``out``."""
  port = _free_port()
  env = dict(os.environ, PYTHONPATH=str(ROOT), GUMBAX_DATA_DIR=str(MNIST))
  env["XLA_FLAGS"] = os.environ.get("GUMBAX_TEST_XLA_FLAGS", "")  # one CPU device per process
  return [subprocess.Popen(
      [sys.executable, "-m", "experiments", "run", str(TINY), *overrides, "--out", str(out),
       "--no-progress", "--coordinator-address", f"127.0.0.1:{port}",
       "--num-processes", str(processes), "--process-id", str(i), *extra],
      cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(processes)]


def _finish(procs, timeout=400):
  outs = [p.communicate(timeout=timeout) for p in procs]
  for i, (p, (stdout, stderr)) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{stderr[-3000:]}"
  return outs


def _rows(run_dir):
  return [{k: v for k, v in r.items() if k != "wall_time"}
          for r in files.read_jsonl(run_dir / "members" / MEMBER / "metrics.jsonl")]


def _two_processes_then_one(tmp_path, monkeypatch, overrides):
  """Runs two processes, checks (a) they finish and (b) process 0 alone writes the folder
  and the report, then (c) one process with the same global batch gives the same rows.
  Returns the two-process rows."""
  outs = _finish(_launch(tmp_path / "two", tmp_path, overrides=overrides))
  assert "| task |" in outs[0][0] and "| task |" not in outs[1][0]
  assert "run folder" not in outs[1][1]
  two = _rows(tmp_path / "two")
  summary = json.loads((tmp_path / "two" / "members" / MEMBER / "summary.json").read_text())
  assert summary["status"] == "completed" and summary["devices"] == 2
  assert (tmp_path / "two" / "table.md").is_file()
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(MNIST))
  runner.run(cfg_lib.load(TINY, overrides), tmp_path / "one", progress=False)
  one = _rows(tmp_path / "one")
  assert [(r["step"], r["split"]) for r in two] == [(r["step"], r["split"]) for r in one]
  for a, b in zip(two, one):
    for key in set(b) - {"step", "split", "final", "iw_samples"}:
      assert_f32_close(a[key], b[key], scale=b[key], err_msg=f"step {b['step']} {b['split']} {key}")
  return two


@needs_mnist
def test_two_processes_equal_one(tmp_path, monkeypatch):
  _two_processes_then_one(tmp_path, monkeypatch, SHORT)


@needs_mnist
@pytest.mark.slow
def test_two_processes_resume_after_both_are_killed(tmp_path, monkeypatch):
  two = _two_processes_then_one(tmp_path, monkeypatch, OVERRIDES)
  # (d) kill both after a checkpoint, start both again: the uninterrupted numbers.
  killed = tmp_path / "killed"
  member = killed / "members" / MEMBER
  procs = _launch(killed, tmp_path)
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and all(p.poll() is None for p in procs):
    if files.checkpoint_steps(member):
      break
    time.sleep(0.02)
  assert all(p.poll() is None for p in procs), "the run ended before it was killed"
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.communicate()
  assert json.loads((member / "summary.json").read_text())["status"] == "running"
  assert len(_rows(killed)) < len(two)
  outs = _finish(_launch(killed, tmp_path, "--no-report"))
  assert "resuming from the checkpoint" in outs[0][1]
  assert _rows(killed) == two


@needs_mnist
@pytest.mark.slow
def test_a_dead_peer_stops_the_other_process_with_an_error(tmp_path):
  procs = _launch(tmp_path / "run", tmp_path, "--peer-timeout", "5", "--no-report")
  member = tmp_path / "run" / "members" / MEMBER
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and not files.checkpoint_steps(member):
    time.sleep(0.02)
  procs[1].send_signal(signal.SIGKILL)
  procs[1].communicate()
  start = time.monotonic()
  _, stderr = procs[0].communicate(timeout=120)
  assert time.monotonic() - start < 120
  # The broken collective raises and the CLI exits with status 3 and an error line; a
  # peer that vanishes without closing its connections trips the heartbeat instead,
  # and JAX aborts the process (SIGABRT) with its own message.
  if procs[0].returncode == 3:
    assert "error: process 0 of 2 stopped:" in stderr, stderr[-3000:]
  else:
    assert procs[0].returncode == -signal.SIGABRT, stderr[-3000:]
    assert "another task died" in stderr, stderr[-3000:]


@pytest.mark.parametrize("flags, message", [
    (["--num-processes", "2"], "needs all of --coordinator-address"),
    (["--coordinator-address", "127.0.0.1", "--num-processes", "2", "--process-id", "0"],
     "is not HOST:PORT"),
    (["--coordinator-address", "h:1", "--num-processes", "2", "--process-id", "2"],
     "is not in 0..1"),
    (["--distributed", "--process-id", "0"], "drop --distributed"),
])
def test_bad_distributed_flags_are_user_errors(tmp_path, capsys, flags, message):
  status = cli.main(["run", str(TINY), "--out", str(tmp_path / "run"), *flags])
  assert status == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and message in err
  assert not (tmp_path / "run").exists()


def test_one_process_writes_and_broadcast_is_identity():
  assert distributed.is_writer()
  tree = {"a": np.arange(3, dtype=np.float32), "b": np.int32(4)}
  out = distributed.broadcast(tree)
  assert out is tree
