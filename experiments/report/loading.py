"""Reading run folders: members, their metric rows and their final-metric settings.

A run folder holds ``members/<id>/metrics.jsonl`` and ``members/<id>/summary.json``;
each member with a readable summary becomes a :class:`MemberResult`. Metric values
are JSON numbers or ``null`` (a non-finite value, see ``experiments.files``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class MemberResult:
  """One trained member's results: its folder, ``summary.json`` and parsed metric rows."""

  dir: Path
  summary: dict
  metrics: list[dict]


def read_metrics(path: str | Path) -> list[dict]:
  """Reads a JSON-lines metrics file, skipping blank, unparsable or malformed lines.

  Args:
    path: The ``metrics.jsonl`` file; a missing file yields no rows.

  Returns:
    The rows that are JSON objects with a ``step`` and a ``split``, in file order.
  """
  path = Path(path)
  if not path.is_file():
    return []
  rows = []
  for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
    try:
      row = json.loads(line)
    except ValueError:  # Truncated last line of a killed process, or garbage.
      continue
    if isinstance(row, dict) and isinstance(row.get("step"), (int, float)) and "split" in row:
      rows.append(row)
  return rows


def load_run(run_dir: str | Path, skipped: list[str] | None = None) -> list[MemberResult]:
  """Loads every member of a run folder that has a readable ``summary.json``.

  Args:
    run_dir: The run folder (containing ``members/``).
    skipped: If given, a reason is appended for each member left out.

  Returns:
    The members, sorted by folder name.

  Raises:
    FileNotFoundError: If ``run_dir`` is not a directory.
  """
  run_dir = Path(run_dir)
  if not run_dir.is_dir():
    raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
  skipped = [] if skipped is None else skipped
  members = []
  member_dirs = sorted(p for p in (run_dir / "members").glob("*") if p.is_dir())
  for member_dir in member_dirs:
    try:
      summary = json.loads((member_dir / "summary.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
      skipped.append(f"{member_dir}: no summary.json yet")
      continue
    except ValueError as err:
      skipped.append(f"{member_dir}: unreadable summary.json ({err})")
      continue
    members.append(MemberResult(member_dir, summary, read_metrics(member_dir / "metrics.jsonl")))
  return members


def load_runs(run_dirs: list[Path], skipped: list[str]) -> list[MemberResult]:
  """The members of several run folders pooled (:func:`load_run` on each, in order).

  Raises:
    FileNotFoundError: If a run folder is not a directory.
    ValueError: If a run folder has no member with a readable ``summary.json``.
  """
  members = []
  for run_dir in run_dirs:
    loaded = load_run(run_dir, skipped)
    if not loaded:
      raise ValueError(f"run folder {str(run_dir)!r} has no members with a summary.json")
    members += loaded
  return members


def number(value: Any) -> float | None:
  """A float for JSON numbers (``None`` becomes NaN); ``None`` for anything else."""
  if value is None:
    return math.nan
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return float(value)


def as_float(value: Any) -> float:
  """Like :func:`number` but NaN for non-numbers."""
  value = number(value)
  return math.nan if value is None else value


def series(member: MemberResult, split: str, key: str) -> dict[int, float]:
  """``{step: value}`` of one metric of one split (a later duplicate step wins)."""
  out = {}
  for row in member.metrics:
    value = number(row.get(key, ""))
    if row.get("split") == split and value is not None:
      out[int(row["step"])] = value
  return out


def final_eval_samples(summary: dict) -> dict[str, int]:
  """The importance samples (m) of each split's final metrics, e.g. ``{"test": 1000}``.

  ``summary["final_eval_samples"]`` when the runner or ``python -m experiments
  evaluate`` wrote it; for older summaries the config's ``task.final_eval_samples``
  for every split with final metrics; ``{}`` for tasks without it.
  """
  recorded = summary.get("final_eval_samples")
  if isinstance(recorded, dict):
    return recorded
  m = ((summary.get("hyperparameters") or {}).get("task") or {}).get("final_eval_samples")
  splits = {name.split("/", 1)[0] for name in summary.get("final") or {}} - {"train"}
  return {split: m for split in splits} if m is not None else {}
