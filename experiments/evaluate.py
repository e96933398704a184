"""Evaluates the finished members of a run again, e.g. with more importance samples.

``python -m experiments evaluate RUN_DIR --samples 1000`` loads each completed
member's final checkpoint and recomputes the task's final evaluation on its splits
(all of them, or ``--splits test``) with m = 1000 samples per example. A run trained
with a cheap final evaluation (``task.final_eval_samples=100``) gets the m = 1000
importance-weighted bound later, without training again.

The evaluation keys are those of the runner's final evaluation, so evaluating with the
run's own m reproduces its final numbers. The new values replace the member's
``summary.json`` ``final`` entries of those splits, ``final_eval_samples`` records the
m of each split, and ``evaluations`` lists every re-evaluation. Nothing is lost: the
new rows are appended to ``metrics.jsonl`` (marked ``reevaluated``) after the
original final rows.

References:
  Burda, Grosse, Salakhutdinov, Importance Weighted Autoencoders, 2016
  (arXiv 1509.00519): the bound tightens as m grows.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import time

import jax
import numpy as np
from jax.sharding import Mesh

from experiments import config as cfg_lib
from experiments import console
from experiments import files
from experiments import report
from experiments.program import Program, evaluation_key
from experiments.tasks import make_task

__all__ = ["evaluate_run"]


def _task_key(config: cfg_lib.Config) -> str:
  """Members whose task, data, batch size and slope annealing agree share one task
  (data and jitted code)."""
  return json.dumps([config.task.model_dump(mode="json"), config.data.model_dump(mode="json"),
                     config.train.batch_size, config.temperature.slope], sort_keys=True)


def _check_args(run_dir: pathlib.Path, samples) -> list[pathlib.Path]:
  """The member folders of ``run_dir``; ValueError for bad arguments."""
  if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
    raise ValueError(f"samples must be a positive integer, got {samples!r}")
  if not (run_dir / "config.yaml").is_file():
    raise ValueError(f"{str(run_dir)!r} is not a run folder (no config.yaml)")
  folders = sorted(p for p in (run_dir / "members").glob("*") if (p / "summary.json").is_file())
  if not folders:
    raise ValueError(f"run folder {str(run_dir)!r} has no members with a summary.json")
  return folders


def _splits(folder: pathlib.Path, task, config: cfg_lib.Config, splits) -> list[str]:
  """The splits to evaluate; ValueError when the task draws no samples or lacks one."""
  if not task.sampled_eval:
    raise ValueError(f"the {config.task.name} task's evaluation draws no samples (it is exact "
                     "or absent), so another m changes nothing")
  chosen = list(splits) if splits else list(task.eval_splits)
  unknown = [s for s in chosen if s not in task.eval_splits]
  if unknown:
    raise ValueError(f"{folder.name}: no split {', '.join(map(repr, unknown))}; "
                     f"its task has {', '.join(task.eval_splits)}")
  return chosen


def _evaluate_member(folder: pathlib.Path, summary: dict, program: Program, samples: int,
                     chosen: list[str]) -> None:
  """Evaluates one member's final checkpoint on ``chosen``; appends the rows to its
  ``metrics.jsonl`` and updates its ``summary.json``."""
  config, task = program.config, program.task
  step = config.train.steps
  params = files.load_params(folder, step, task.init(jax.random.key(0)))
  stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  t0 = time.perf_counter()
  # Older summaries hold no m per split: start from the config's, for the splits kept.
  summary["final_eval_samples"] = dict(report.final_eval_samples(summary))
  log = files.MetricsLog(folder / "metrics.jsonl")
  try:
    for split in chosen:
      key = evaluation_key(jax.random.key(config.seed), step, split)  # the final evaluation's
      metrics = task.evaluate(params, key, split, samples, final=True,
                              temperature=program.evaluation_temperature(step))
      log.write({"step": step, "split": split, "wall_time": summary.get("wall_time"),
                 "final": True, "reevaluated": stamp, **metrics})
      summary["final"].update({f"{split}/{k}": v for k, v in metrics.items() if k != "iw_samples"})
      summary["final_eval_samples"][split] = samples
  finally:
    log.close()
  seconds = time.perf_counter() - t0
  summary.setdefault("evaluations", []).append(
      {"samples": samples, "splits": chosen, "seconds": round(seconds, 1), "time": stamp})
  files.write_json(folder / "summary.json", summary)
  shown = ", ".join(f"{k} {v:.2f}" for k, v in summary["final"].items()
                    if k.split("/", 1)[0] in chosen and isinstance(v, float))
  console.say(f"[{folder.name}] m = {samples}: {shown} ({seconds:.0f} s)")


def evaluate_run(run_dir: str | pathlib.Path, samples: int,
                 splits: list[str] | None = None) -> dict:
  """Evaluates every completed member of ``run_dir`` from its final checkpoint.

  Args:
    run_dir: a run folder written by ``python -m experiments run``.
    samples: importance samples per example (m), at least 1.
    splits: the splits to evaluate (e.g. ``["test"]``); default all the task's splits.

  Returns:
    ``{"evaluated": [member ids], "skipped": [notes]}``; a member that did not
    complete, or whose final checkpoint is missing, is skipped with a note.

  Raises:
    ValueError: ``samples`` < 1, a folder that is not a run folder or has no member,
      a task whose evaluation draws no samples (the toy task's is exact), or a split
      the task does not have.
    experiments.data.MnistNotFoundError: the task's data cannot be found.
  """
  run_dir = pathlib.Path(run_dir)
  folders = _check_args(run_dir, samples)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  tasks, evaluated, skipped = {}, [], []
  for folder in folders:
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    if summary.get("status") != "completed":
      skipped.append(f"{folder.name}: not evaluated, its status is {summary.get('status')!r}")
      continue
    config = cfg_lib.load(folder / "config.yaml")
    if config.train.steps not in files.checkpoint_steps(folder):
      skipped.append(f"{folder.name}: not evaluated, no checkpoint at its final step "
                     f"{config.train.steps}")
      continue
    key = _task_key(config)
    if key not in tasks:
      tasks[key] = make_task(config)
    chosen = _splits(folder, tasks[key], config, splits)
    _evaluate_member(folder, summary, Program(config, tasks[key], mesh), samples, chosen)
    evaluated.append(folder.name)
  return {"evaluated": evaluated, "skipped": skipped}
