"""The README's quickstart tables are the ones `configs/quickstart.yaml` prints."""

from __future__ import annotations

import pathlib
import re

import pytest

from experiments import cli
from experiments import config as cfg_lib
from experiments import sweep
from experiments import data as data_lib
from experiments import report

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "mnist"
CONFIG = ROOT / "configs" / "quickstart.yaml"


def _readme_tables() -> str:
  text = (ROOT / "README.md").read_text(encoding="utf-8")
  match = re.search(r"<!-- quickstart-tables:[^\n]*-->\n(.*?)<!-- /quickstart-tables -->", text,
                    re.S)
  assert match, "README.md lost its quickstart-tables block"
  return match.group(1)


def _rows(markdown: str, *, drop_wall_time: bool = False) -> list[list[str]]:
  """Table rows (headers included, separator lines left out), as lists of cells; the
  printed tables end with a wall-time column, which the README leaves out."""
  rows = []
  for line in markdown.splitlines():
    if line.startswith("|") and not set(line) <= set("|- "):
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      rows.append(cells[:-1] if drop_wall_time else cells)
  return rows


def test_readme_lists_the_members_the_config_trains():
  members, _ = sweep.expand(cfg_lib.load(CONFIG))
  want = sorted((m.task_label.split("-")[0], m.config.estimator.title) for m in members)
  got = sorted((row[0].split("-")[0], row[1]) for row in _rows(_readme_tables())
               if row[0] != "task")
  assert got == want


@pytest.mark.slow
@pytest.mark.skipif(data_lib.find_mnist(SHARED) is None, reason=f"MNIST not found at {SHARED}")
def test_readme_tables_are_what_the_quickstart_prints(tmp_path, monkeypatch, capsys):
  """About 3 minutes on 2 cores: the whole quickstart, compared cell by cell."""
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(SHARED))
  assert cli.main(["run", str(CONFIG), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
  printed = capsys.readouterr().out
  assert printed.strip() == report.markdown_tables(report.load_run(tmp_path / "run")).strip()
  assert _rows(printed, drop_wall_time=True) == _rows(_readme_tables())
