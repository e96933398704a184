"""A user's mistakes get one `error:` line and exit status 2; what a run writes is
strict JSON under the user's umask; data is downloaded when missing (local server)."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import stat

import pytest

from _http import closed_port_url, serve
from experiments import cli
from experiments import data as data_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "mnist"
TOY = ROOT / "configs" / "tests" / "toy_tiny.yaml"
VAE = ROOT / "configs" / "tests" / "vae_tiny.yaml"
needs_mnist = pytest.mark.skipif(data_lib.find_mnist(SHARED) is None,
                                 reason=f"MNIST not found at {SHARED}")


def _main(capsys, *argv):
  status = cli.main([str(a) for a in argv])
  return status, capsys.readouterr().err


def _one_error_line(err: str) -> str:
  lines = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in err, err
  return lines[0]


def test_malformed_override_is_one_error_line(tmp_path, capsys):
  status, err = _main(capsys, "run", TOY, "sweep.seeds=[0,1", "--out", tmp_path / "run")
  assert status == 2
  line = _one_error_line(err)
  assert "sweep.seeds=[0,1" in line and "not valid YAML" in line
  assert not (tmp_path / "run").exists()


def _data_dir(tmp_path, bad_name: str, content: bytes) -> pathlib.Path:
  """The shared MNIST files linked into a folder, ``bad_name.gz`` replaced by ``content``."""
  directory = tmp_path / "mnist"
  directory.mkdir()
  for name in data_lib.FILES:
    if name != bad_name:
      (directory / f"{name}.gz").symlink_to(SHARED / f"{name}.gz")
  (directory / f"{bad_name}.gz").write_bytes(content)
  return directory


@needs_mnist
@pytest.mark.parametrize("damage", ["truncated", "checksum"])
def test_corrupt_mnist_is_one_error_line_naming_the_file(tmp_path, capsys, monkeypatch, damage):
  name = "train-labels-idx1-ubyte"
  good = (SHARED / f"{name}.gz").read_bytes()
  if damage == "truncated":
    content = good[:len(good) // 2]
  else:  # a well-formed gzip of the labels with one byte changed
    raw = bytearray(gzip.decompress(good))
    raw[-1] ^= 1
    content = gzip.compress(bytes(raw))
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(_data_dir(tmp_path, name, content)))
  status, err = _main(capsys, "run", VAE, "--out", tmp_path / "run", "--no-progress")
  assert status == 2
  line = _one_error_line(err)
  assert f"{name}.gz" in line and "delete it" in line
  assert ("SHA-256" in line) == (damage == "checksum")
  assert not (tmp_path / "run").exists()  # failed before training: no run folder


def test_missing_mnist_leaves_no_run_folder(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(tmp_path / "empty"))
  status, err = _main(capsys, "run", VAE, "--out", tmp_path / "run", "--no-progress")
  assert status == 2 and "GUMBAX_DATA_DIR" in _one_error_line(err)
  assert not (tmp_path / "run").exists()


def _toy_config(tmp_path, targets) -> pathlib.Path:
  tasks = ", ".join(f"{{name: toy, target: {t}}}" for t in targets)
  path = tmp_path / "toy.yaml"
  path.write_text(f"name: diverge\nestimator: reinforce\n"
                  "train: {steps: 10, log_every: 10, eval_every: 0, checkpoint_every: 10}\n"
                  f"sweep: {{tasks: [{tasks}]}}\n")
  return path


def test_a_run_whose_members_all_diverged_exits_1_and_names_them(tmp_path, capsys):
  status, err = _main(capsys, "run", _toy_config(tmp_path, [".nan"]), "--out", tmp_path / "run",
                      "--no-progress")
  assert status == 1
  assert "toy-bernoulli-tnan-reinforce-seed0" in _one_error_line(err)
  # One of two diverged: a warning naming it, exit status 0.
  status, err = _main(capsys, "run", _toy_config(tmp_path, [".nan", 0.45]), "--out",
                      tmp_path / "run2", "--no-progress")
  assert status == 0 and "error:" not in err
  assert "warning: 1 of 2" in err and "toy-bernoulli-tnan-reinforce-seed0" in err


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_run_files_follow_the_umask(tmp_path, capsys, umask):
  old = os.umask(umask)
  try:
    status, _ = _main(capsys, "run", TOY, "sweep.estimators=[relaxed]", "sweep.seeds=[0]",
                      "--out", tmp_path / "run", "--no-progress")
  finally:
    os.umask(old)
  assert status == 0
  files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
  assert {p.name for p in files} >= {"config.yaml", "summary.json", "metrics.jsonl", "table.md"}
  assert any(p.suffix == ".msgpack" for p in files)
  for path in files:
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_offline_run_skips_mnist_members_in_one_line(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(tmp_path / "empty"))
  config = tmp_path / "offline.yaml"
  config.write_text(
      "name: offline\nestimator: straight_through\n"
      "train: {steps: 10, log_every: 10, eval_every: 0, checkpoint_every: 10, batch_size: 4}\n"
      f"data: {{download: true, mirrors: ['{closed_port_url()}'], if_missing: skip}}\n"
      "sweep: {tasks: [{name: toy}, {name: vae}, {name: vae, distribution: bernoulli}]}\n")
  status, err = _main(capsys, "run", config, "--out", tmp_path / "run", "--no-progress")
  assert status == 0
  skipped = [line for line in err.splitlines() if "skipped" in line]
  assert len(skipped) == 1, err
  assert "could not be downloaded" in skipped[0] and "2 member group(s)" in skipped[0]
  summaries = list((tmp_path / "run" / "members").glob("*/summary.json"))
  assert [json.loads(p.read_text())["task"] for p in summaries] == ["toy-bernoulli-t0.45"]


@needs_mnist
def test_a_run_downloads_missing_mnist(tmp_path, capsys, monkeypatch):
  target = tmp_path / "cache" / "mnist"
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(target))
  with serve(SHARED) as url:
    status, err = _main(capsys, "run", VAE, "data.download=true", f"data.mirrors=['{url}']",
                        "--out", tmp_path / "run", "--no-progress", "--no-report")
  assert status == 0, err
  assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.gz" for n in data_lib.FILES)
  (summary,) = (tmp_path / "run" / "members").glob("*/summary.json")
  assert json.loads(summary.read_text())["status"] == "completed"


def test_the_quickstart_downloads_and_skips_when_offline():
  from experiments import config as cfg_lib
  data = cfg_lib.load(ROOT / "configs" / "quickstart.yaml").data
  assert data.download and data.if_missing == "skip" and data.mirrors is None
