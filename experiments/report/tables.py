"""Tables: the comparison of a run's groups (Markdown and CSV), the choice of learning
rate by validation, and the variance study's per-checkpoint tables.

A group's cell is ``mean ± std`` over its seeds (sample std, ddof=1) in the number
rule of :mod:`experiments.report.formatting`. Missing final metrics are ignored, but
a NaN final value propagates to its group's mean, so divergence shows. With
:func:`select_by`, per estimator setting only the learning rate and decay whose
seeds have the lowest mean of a final metric are kept: the choice of rate by
validation.
"""

from __future__ import annotations

import collections
import math
from pathlib import Path

import numpy as np

from experiments import files
from experiments.report import formatting
from experiments.report.grouping import GroupKey, groups, lr_text, temperature_text
from experiments.report.loading import MemberResult, as_float, final_eval_samples, number

_SPLIT_RANK = {"test": 0, "valid": 1, "train": 2}


def _metric_order(name: str) -> tuple:
  """Sort key of a metric name: test, valid, train, then others; by name within a split."""
  return (_SPLIT_RANK.get(name.split("/", 1)[0], 3), name)


def _mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample std (ddof=1); std is NaN for fewer than two values."""
  if not values:
    return math.nan, math.nan
  arr = np.asarray(values, dtype=float)
  std = float(np.std(arr, ddof=1)) if arr.size > 1 else math.nan
  return float(np.mean(arr)), std


def _group_stats(members: list[MemberResult]) -> tuple[list[str], list[dict]]:
  """Metric names (table order) and one record per group: its numbers, status
  counts and the m of its final metrics (:func:`_samples_text`)."""
  names = sorted({name for m in members for name in m.summary.get("final") or {}},
                 key=_metric_order)
  records = []
  for key, group in groups(members).items():
    stats = {}
    for name in names:
      values = [number((m.summary.get("final") or {}).get(name, "")) for m in group]
      stats[name] = (_mean_std([v for v in values if v is not None]),
                     sum(v is not None for v in values))
    records.append({
        "key": key, "seeds": len(group), "stats": stats,
        "status": collections.Counter(str(m.summary.get("status")) for m in group),
        "samples": _samples_text(group),
        "steps": _mean_std([as_float(m.summary.get("steps")) for m in group])[0],
        "wall_time": _mean_std([as_float(m.summary.get("wall_time")) for m in group])[0],
    })
  return names, records


def _samples_text(group: list[MemberResult]) -> str:
  """The m of a group's final metrics: ``1000``, or per split when they differ
  (``test 1000, valid 100``); values of different seeds joined by ``/``."""
  per_split = collections.defaultdict(set)
  for m in group:
    for split, samples in final_eval_samples(m.summary).items():
      per_split[split].add(samples)
  if not per_split:
    return "-"
  text = {split: "/".join(str(v) for v in sorted(values, key=str))
          for split, values in per_split.items()}
  if len(set(text.values())) == 1:
    return next(iter(text.values()))
  return ", ".join(f"{split} {text[split]}" for split in sorted(text, key=_metric_order))


def _status_text(counts: collections.Counter) -> str:
  return ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))


def _stat_cell(stat: tuple[tuple[float, float], int], seeds: int) -> str:
  """``mean ± std`` of one metric of a group, ``(n=k)`` when only k seeds have it."""
  (mean, std), count = stat
  if count == 0:
    return "-"
  cell = formatting.fmt(mean) if math.isnan(std) or not math.isfinite(mean) else (
      f"{formatting.fmt(mean)} ± {formatting.fmt_std(std, mean)}")
  return cell + (f" (n={count})" if count < seeds else "")


def comparison_table(members: list[MemberResult]) -> tuple[list[str], list[list[str]]]:
  """One formatted row per group: settings, seed count, ``mean ± std`` of finals.

  A ``training`` column (``grouping.train_text``, e.g. ``steps=50000 batch=100``) is
  present only when the groups differ in it, a ``status`` column only when some member
  did not complete, an ``eval samples (m)`` column (``loading.final_eval_samples``)
  when some member's task has one.

  Returns:
    ``(header, rows)``, all cells strings.
  """
  names, records = _group_stats(members)
  show_train = len({r["key"].train for r in records}) > 1
  show_status = any(set(r["status"]) != {"completed"} for r in records)
  show_samples = any(final_eval_samples(m.summary) for m in members)
  header = ["task", "estimator", "temperature", "learning rate"] + ["training"] * show_train
  header += ["seeds"] + ["status"] * show_status + ["eval samples (m)"] * show_samples
  header += names + ["steps", "wall time (s)"]
  rows = []
  for r in records:
    key = r["key"]
    row = [str(key.task), str(key.estimator), temperature_text(key), lr_text(key)]
    row += [key.train] * show_train + [str(r["seeds"])]
    row += [_status_text(r["status"])] * show_status + [r["samples"]] * show_samples
    row += [_stat_cell(r["stats"][name], r["seeds"]) for name in names]
    row += [f"{r['steps']:.0f}" if math.isfinite(r["steps"]) else "-",
            formatting.fmt(r["wall_time"])]
    rows.append(row)
  return header, rows


def markdown_tables(members: list[MemberResult]) -> str:
  """:func:`comparison_table` as Markdown, one table per task name (``summary["task"]``,
  e.g. ``toy-bernoulli-t0.45``, ``vae-categorical-20x10``) when there are several, each
  under a ``### name`` heading with only the columns its members have; variants of one
  task (another prior, other widths) stay rows of one table."""
  by_task = collections.defaultdict(list)
  for member in members:
    by_task[str(member.summary.get("task"))].append(member)
  if len(by_task) == 1:
    return formatting.markdown(*comparison_table(members))
  return "\n".join(f"### {task}\n\n" + formatting.markdown(*comparison_table(by_task[task]))
                   for task in sorted(by_task))


def select_by(members: list[MemberResult], metric: str) -> tuple[list[GroupKey], list[str]]:
  """Per estimator setting, the learning rate (and decay) with the lowest mean ``metric``.

  An estimator setting is a group key without its learning rate and decay (task,
  estimator, temperature, temperature schedule). Among its groups, the one whose
  seeds have the lowest mean final ``metric`` (e.g. ``valid/neg_elbo``; lower is
  better) is chosen. A group is eligible only if every one of its seeds has a finite
  value: a seed that diverged (NaN, or stopped with no final metrics) or is still
  running rules its group out rather than dropping out of the mean.

  Returns:
    ``(chosen, unchosen)``: the chosen group keys in table order, and one note per
    estimator setting with no eligible group.

  Raises:
    ValueError: If no member has a final value named ``metric``.
  """
  names, records = _group_stats(members)
  if metric not in names:
    raise ValueError(f"no member has a final metric {metric!r}; they have: {', '.join(names)}")
  settings = collections.defaultdict(list)
  for r in records:
    settings[r["key"][:4]].append(r)
  chosen, unchosen = [], []
  for setting, candidates in settings.items():
    eligible = [r for r in candidates
                if r["stats"][metric][1] == r["seeds"] and math.isfinite(r["stats"][metric][0][0])]
    if eligible:
      chosen.append(min(eligible, key=lambda r: r["stats"][metric][0][0])["key"])
    else:
      unchosen.append(f"{setting[0]} {setting[1]}: no learning rate with a finite {metric} "
                      "for every seed")
  return chosen, unchosen


def _csv_row(record: dict, names: list[str]) -> list:
  """One group of the CSV table: settings, then numeric mean/std columns."""
  key, csv_number = record["key"], formatting.csv_number
  row = [key.task, key.estimator, csv_number(key.temperature), key.schedule,
         csv_number(key.learning_rate), key.lr_decay, key.train, record["seeds"],
         _status_text(record["status"]),
         "" if record["samples"] == "-" else record["samples"]]
  for name in names:
    (mean, std), count = record["stats"][name]
    row += ["nan" if count and math.isnan(mean) else csv_number(mean), csv_number(std)]
  return row + [csv_number(record["steps"]), csv_number(record["wall_time"])]


def write_tables(members: list[MemberResult], out_dir: str | Path, *,
                 stem: str = "table") -> tuple[Path, Path]:
  """Writes ``<stem>.md`` (formatted, one table per task: :func:`markdown_tables`) and
  ``<stem>.csv`` (one table, numeric mean/std columns, empty where a task has no value).

  Returns:
    ``(md_path, csv_path)``.
  """
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  md_path, csv_path = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
  md_path.write_text(markdown_tables(members), encoding="utf-8")
  names, records = _group_stats(members)
  header = ["task", "estimator", "temperature", "temperature_schedule", "learning_rate",
            "lr_decay", "train", "seeds", "status", "eval_samples"]
  header += [f"{n}_{s}" for n in names for s in ("mean", "std")] + ["steps_mean", "wall_time_mean"]
  formatting.write_csv(csv_path, header, (_csv_row(r, names) for r in records))
  return md_path, csv_path


def write_variance_tables(rows: list[dict], out_dir: str | Path, columns: list[str]) -> list[str]:
  """The variance study's tables: ``table_stepN.md`` and ``table_stepN.csv`` per checkpoint.

  Args:
    rows: The study's measurements, one dict per checkpoint and estimator, with
      ``step``, ``estimator``, ``reference`` and ``reference_se2``.
    out_dir: The study's folder.
    columns: The columns, ``step`` first; per-group ``variance/...`` and
      ``mean_cosine/...`` columns of the rows are appended. The Markdown table
      leaves out ``step`` (in its note) and has four significant digits
      (``formatting.fmt_significant``); the CSV has full precision.

  Returns:
    The paths written, as strings, two per checkpoint in step order.
  """
  out_dir = Path(out_dir)
  extra = sorted({k for r in rows for k in r if k.startswith(("variance/", "mean_cosine/"))})
  columns = list(columns) + extra
  paths = []
  for step in sorted({r["step"] for r in rows}):
    chosen = [r for r in rows if r["step"] == step]
    md = out_dir / f"table_step{step}.md"
    cells = [[formatting.fmt_significant(r.get(c)) for c in columns[1:]] for r in chosen]
    note = (f"\nStep {step}; reference: {chosen[0]['reference']} (its standard error, squared "
            f"and summed: {chosen[0]['reference_se2']:.3g}).\n")
    files.write_atomic(md, formatting.markdown(columns[1:], cells, spaced_rule=False) + note)
    path_csv = out_dir / f"table_step{step}.csv"
    formatting.write_csv(path_csv, columns, ([r.get(c) for c in columns] for r in chosen))
    paths += [str(md), str(path_csv)]
  return paths
