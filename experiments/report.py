"""Tables and plots from experiment run folders (numpy/json/csv/matplotlib).

A run folder holds ``members/<id>/metrics.jsonl`` and ``members/<id>/summary.json``.
Members that differ only by seed form a *group*; tables and plots aggregate over
the seeds of each group. The task column names the model: the task's short name
plus each model setting that is not its default (``vae-bernoulli-200-prior=learned``),
so that runs of different models never share a group. With ``select`` (a final metric
such as ``valid/neg_elbo``, lower is better), a second table keeps, per estimator
setting, only the learning rate and decay whose seeds have the lowest mean of it: the
choice of rate by validation.

Number formatting rule (tables): a finite value ``x`` with ``|x| >= 10`` is shown
with two decimals (``1234.57``), any other value with four significant digits
(``0.01235``, ``3.142``); NaN and infinities print as ``nan``/``inf``/``-inf``.
A std beside a mean of ``|mean| >= 10`` gets the mean's two decimals (``111.41 ± 0.30``);
beside a smaller mean it follows the rule on its own. Missing final metrics are
ignored, but a NaN final value propagates to its group's mean, so divergence shows.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

from experiments import config as cfg_lib
from experiments.tasks import MNIST_TASKS

_LINESTYLES = ("-", "--", ":", "-.")
EMA_ALPHA = 0.1  # train-loss smoothing: s_t = a * x_t + (1 - a) * s_{t-1}, per logged row
_EVAL_SPLITS = ("valid", "test")
_NON_METRIC_KEYS = frozenset({"step", "split", "wall_time", "iw_samples"})
_SPLIT_RANK = {"test": 0, "valid": 1, "train": 2}
# name -> schema, from the config's discriminated union of task schemas.
_TASK_SCHEMAS = {schema.model_fields["name"].default: schema
                 for schema in typing.get_args(typing.get_args(cfg_lib.TaskConfig)[0])}
# Task settings already in the short name (config.describe), or that change only how a
# member is evaluated, not the model it trains.
_NOT_MODEL_SETTINGS = frozenset({"name", "distribution", "num_latents", "num_classes", "target",
                                 "eval_samples", "final_eval_samples", "eval_examples",
                                 "final_eval_examples", "variance_samples"})
# Data settings that say where the data comes from, not which data a model trains on.
_NOT_DATA_SETTINGS = frozenset({"dir", "download", "mirrors", "if_missing"})


@dataclasses.dataclass
class Member:
  """One trained member: its folder, ``summary.json`` and parsed metric rows."""

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


def load_run(run_dir: str | Path, skipped: list[str] | None = None) -> list[Member]:
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
    members.append(Member(member_dir, summary, read_metrics(member_dir / "metrics.jsonl")))
  return members


def lr_decay(summary: dict) -> str:
  """The learning-rate decay of a member, e.g. ``x0.9/1000`` (every 1000 steps); ``""`` for none."""
  optimizer = (summary.get("hyperparameters") or {}).get("optimizer") or {}
  rate = optimizer.get("decay_rate", 1.0)
  if not isinstance(rate, (int, float)) or rate >= 1:
    return ""
  return f"x{rate:g}/{optimizer.get('decay_steps', '?')}"


def temperature_schedule(member: Member) -> str:
  """How a member's temperature moved during training, e.g. ``exponential 3e-05/1000 to 0.5``.

  ``""`` when it stayed at its initial value: a constant schedule, or an estimator the
  schedule does not drive (REBAR and RELAX learn their temperature; score-function
  estimators have none). The runner logs ``temperature`` in the train rows exactly
  when the schedule drives the estimator, so that is what decides it here. Slope
  annealing (``temperature.slope``: the model's logits are divided by tau) adds
  ``slope``, e.g. ``exponential 1e-05/1000 to 0.5, slope``.
  """
  hyper = member.summary.get("hyperparameters") or {}
  t = hyper.get("temperature") or {}
  schedule = t.get("schedule", "constant")
  slope = ["slope"] if t.get("slope") else []
  if schedule == "constant" or not any(
      row.get("split") == "train" and "temperature" in row for row in member.metrics):
    return ", ".join(slope)
  g = lambda x: f"{x:g}" if isinstance(x, (int, float)) else "?"
  if schedule == "exponential":
    text = f"exponential {g(t.get('rate'))}/{g(t.get('every'))} to {g(t.get('final'))}"
  else:
    steps = t.get("steps") or (hyper.get("train") or {}).get("steps")
    text = f"{schedule} to {g(t.get('final'))} over {g(steps)}"
  return ", ".join([text] + slope)


class GroupKey(NamedTuple):
  """What the members of a group share: everything but the seed."""
  task: Any
  estimator: Any
  temperature: Any  # the initial temperature
  schedule: str  # temperature_schedule(); "" for none
  learning_rate: Any
  lr_decay: str  # lr_decay(); "" for none
  train: str = ""  # train_text(): training length and batch size; "" when unknown


def task_text(summary: dict) -> Any:
  """A member's task: ``summary["task"]`` (e.g. ``vae-bernoulli-200``), followed by each
  model or data setting of its config that the name leaves out and that differs from
  its schema's default, e.g. ``vae-bernoulli-200-prior=learned``,
  ``vae-categorical-20x10-encoder=256_128`` or ``vae-bernoulli-200-binarization=dynamic``.
  Evaluation settings (``eval_samples``, ...), where the data is read from
  (``data.dir``, ...) and data settings of tasks without data (toy) are left out. Summaries without the task's hyperparameters give
  the bare name.
  """
  name = summary.get("task")
  hyperparameters = summary.get("hyperparameters") or {}
  hyper = hyperparameters.get("task")
  schema = _TASK_SCHEMAS.get(hyper.get("name")) if isinstance(hyper, dict) else None
  if schema is None:
    return name
  parts = [str(name)]
  # Data settings name the data a model trains on; the toy task has none.
  data = hyperparameters.get("data") if hyper.get("name") in MNIST_TASKS else None
  for settings, values, skip in ((schema, hyper, _NOT_MODEL_SETTINGS),
                                 (cfg_lib.Data, data if isinstance(data, dict) else {},
                                  _NOT_DATA_SETTINGS)):
    for field, info in settings.model_fields.items():
      if field in skip or field not in values:
        continue
      value = values[field]
      if value != info.get_default(call_default_factory=True):
        text = "_".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{field}={text}")
  return "-".join(parts)


def train_text(summary: dict) -> str:
  """``steps=N batch=B`` from a member's ``train`` hyperparameters ("" without them):
  members trained for different lengths or batch sizes are not seeds of one group."""
  train = (summary.get("hyperparameters") or {}).get("train")
  if not isinstance(train, dict):
    return ""
  return " ".join(f"{label}={train[field]}" for field, label in
                  (("steps", "steps"), ("batch_size", "batch")) if field in train)


def group_key(member: Member) -> GroupKey:
  """The members that differ only by seed share this key."""
  s = member.summary
  return GroupKey(task_text(s), s.get("estimator"), s.get("temperature"),
                  temperature_schedule(member), s.get("learning_rate"), lr_decay(s),
                  train_text(s))


def _sort_key(key: GroupKey) -> tuple:
  return (str(key.task), str(key.estimator), key.temperature is None, key.temperature or 0.0,
          key.schedule, key.learning_rate or 0.0, key.lr_decay, key.train)


def _lr_text(lr, decay: str) -> str:
  return "-" if lr is None else f"{lr:g}" + (f" {decay}" if decay else "")


def _temperature_text(key: GroupKey) -> str:
  if key.temperature is None:
    return "-"
  return f"{key.temperature:g}" + (f", {key.schedule}" if key.schedule else "")


def _groups(members: Iterable[Member]) -> dict[GroupKey, list[Member]]:
  groups = collections.defaultdict(list)
  for member in members:
    groups[group_key(member)].append(member)
  return {key: groups[key] for key in sorted(groups, key=_sort_key)}


def _number(value: Any) -> float | None:
  """A float for JSON numbers (``None`` becomes NaN); ``None`` for anything else."""
  if value is None:
    return math.nan
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return float(value)


def _as_float(value: Any) -> float:
  """Like :func:`_number` but NaN for non-numbers."""
  number = _number(value)
  return math.nan if number is None else number


def _metric_order(name: str) -> tuple:
  return (_SPLIT_RANK.get(name.split("/", 1)[0], 3), name)


def _mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample std (ddof=1); std is NaN for fewer than two values."""
  if not values:
    return math.nan, math.nan
  arr = np.asarray(values, dtype=float)
  std = float(np.std(arr, ddof=1)) if arr.size > 1 else math.nan
  return float(np.mean(arr)), std


def _group_stats(members: list[Member]) -> tuple[list[str], list[dict]]:
  """Metric names (table order) and one record per group: its numbers, status
  counts and the m of its final metrics (:func:`_samples_text`)."""
  names = sorted({name for m in members for name in m.summary.get("final") or {}},
                 key=_metric_order)
  records = []
  for key, group in _groups(members).items():
    stats = {}
    for name in names:
      values = [_number((m.summary.get("final") or {}).get(name, "")) for m in group]
      stats[name] = (_mean_std([v for v in values if v is not None]),
                     sum(v is not None for v in values))
    records.append({
        "key": key, "seeds": len(group), "stats": stats,
        "status": collections.Counter(str(m.summary.get("status")) for m in group),
        "samples": _samples_text(group),
        "steps": _mean_std([_as_float(m.summary.get("steps")) for m in group])[0],
        "wall_time": _mean_std([_as_float(m.summary.get("wall_time")) for m in group])[0],
    })
  return names, records


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


def _samples_text(group: list[Member]) -> str:
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


def _fmt(x: float) -> str:
  """Formats a number by the module rule: 2 decimals if ``|x| >= 10``, else 4 sig. digits."""
  if not math.isfinite(x):
    return str(x)
  return f"{x:.2f}" if abs(x) >= 10 else f"{x:.4g}"


def _fmt_std(std: float, mean: float) -> str:
  """A std with its mean's precision: 2 decimals when ``|mean| >= 10``, else :func:`_fmt`."""
  return f"{std:.2f}" if math.isfinite(std) and abs(mean) >= 10 else _fmt(std)


def _status_text(counts: collections.Counter) -> str:
  return ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))


def comparison_table(members: list[Member]) -> tuple[list[str], list[list[str]]]:
  """One formatted row per group: settings, seed count, ``mean ± std`` of finals.

  A ``training`` column (:func:`train_text`, e.g. ``steps=50000 batch=100``) is present
  only when the groups differ in it, a ``status`` column only when some member did not
  complete, an ``eval samples (m)`` column (:func:`final_eval_samples`) when some
  member's task has one.

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
    row = [str(key.task), str(key.estimator), _temperature_text(key),
           _lr_text(key.learning_rate, key.lr_decay)] + [key.train] * show_train + [str(r["seeds"])]
    row += [_status_text(r["status"])] * show_status
    row += [r["samples"]] * show_samples
    for name in names:
      (mean, std), count = r["stats"][name]
      cell = _fmt(mean) if math.isnan(std) or not math.isfinite(mean) else (
          f"{_fmt(mean)} ± {_fmt_std(std, mean)}")
      row.append("-" if count == 0 else cell + (f" (n={count})" if count < r["seeds"] else ""))
    row += [f"{r['steps']:.0f}" if math.isfinite(r["steps"]) else "-", _fmt(r["wall_time"])]
    rows.append(row)
  return header, rows


def markdown_tables(members: list[Member]) -> str:
  """:func:`comparison_table` as Markdown, one table per task name (``summary["task"]``,
  e.g. ``toy-bernoulli-t0.45``, ``vae-categorical-20x10``) when there are several, each
  under a ``### name`` heading with only the columns its members have; variants of one
  task (another prior, other widths) stay rows of one table."""
  by_task = collections.defaultdict(list)
  for member in members:
    by_task[str(member.summary.get("task"))].append(member)
  if len(by_task) == 1:
    return _markdown(*comparison_table(members))
  return "\n".join(f"### {task}\n\n" + _markdown(*comparison_table(by_task[task]))
                   for task in sorted(by_task))


def _markdown(header: list[str], rows: list[list[str]]) -> str:
  def line(cells):
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
  return "\n".join([line(header), line(["---"] * len(header))] + [line(r) for r in rows]) + "\n"


def _csv_number(x: float | None) -> str:
  """Full-precision text for CSV; empty for undefined (``None`` or NaN)."""
  return "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(x)


def select_by(members: list[Member], metric: str) -> tuple[list[GroupKey], list[str]]:
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


def write_tables(members: list[Member], out_dir: str | Path, *,
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
  with csv_path.open("w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for r in records:
      key = r["key"]
      row = [key.task, key.estimator, _csv_number(key.temperature), key.schedule,
             _csv_number(key.learning_rate), key.lr_decay, key.train, r["seeds"],
             _status_text(r["status"]),
             "" if r["samples"] == "-" else r["samples"]]
      for name in names:
        (mean, std), count = r["stats"][name]
        row += ["nan" if count and math.isnan(mean) else _csv_number(mean), _csv_number(std)]
      writer.writerow(row + [_csv_number(r["steps"]), _csv_number(r["wall_time"])])
  return md_path, csv_path


# ---------------------------------------------------------------------------- plots

Extract = Callable[[Member], dict]


def _series(member: Member, split: str, key: str) -> dict[int, float]:
  """``{step: value}`` for one split/key (a later duplicate step wins)."""
  out = {}
  for row in member.metrics:
    value = _number(row.get(key, ""))
    if row.get("split") == split and value is not None:
      out[int(row["step"])] = value
  return out


def _ema(series: dict[int, float], alpha: float = EMA_ALPHA) -> dict[int, float]:
  """Exponential moving average in step order; non-finite values leave it unchanged."""
  out, state = {}, None
  for step in sorted(series):
    x = series[step]
    if math.isfinite(x):
      state = x if state is None else alpha * x + (1 - alpha) * state
    out[step] = math.nan if state is None else state
  return out


def _positive(series: dict[int, float]) -> dict[int, float]:
  """The finite, positive points of a series (what a log axis can show)."""
  return {step: v for step, v in series.items() if math.isfinite(v) and v > 0}


def _aggregate(series: list[dict[int, float]]):
  """Mean, min and max over seeds at the steps every seed logged; ``None`` if none."""
  common = sorted(set.intersection(*(set(s) for s in series))) if series else []
  if not common:
    return None
  values = np.array([[s[t] for t in common] for s in series], dtype=float)
  return np.array(common), values.mean(0), values.min(0), values.max(0)


def _task_name(members: list[Member]) -> str:
  """The task's short name (``summary["task"]``, e.g. ``vae-categorical-20x10``),
  without the settings :func:`task_text` adds: one plot per name."""
  return str(members[0].summary.get("task"))


def _labels(groups: dict[GroupKey, list[Member]], with_task: bool = False) -> dict[GroupKey, str]:
  """Estimator names, plus temperature/lr/training length only when they vary among
  ``groups``. Where the task varies: the whole task (``with_task``), or else the
  settings it adds to the task's short name (e.g. ``binarization=dynamic``)."""
  vary = GroupKey(*(len({key[i] for key in groups}) > 1 for i in range(len(GroupKey._fields))))
  labels = {}
  for key, members in groups.items():
    settings = str(key.task).removeprefix(_task_name(members)).lstrip("-")
    parts = [f"{key.task}:" if with_task and vary.task else "", str(key.estimator),
             settings if vary.task and not with_task else ""]
    parts += ["τ=" + _temperature_text(key)
              if (vary.temperature or vary.schedule) and key.temperature is not None else "",
              "lr=" + _lr_text(key.learning_rate, key.lr_decay)
              if (vary.learning_rate or vary.lr_decay) and key.learning_rate is not None else "",
              key.train if vary.train else ""]
    labels[key] = " ".join(p for p in parts if p)
  return labels


def _draw(path: Path, title: str, panels: list[tuple[str, str, Extract]],
          groups: dict[GroupKey, list[Member]], labels: dict, logy: bool = False) -> bool:
  """One subplot per panel with data; returns False (nothing written) if none has any.

  Each group keeps one style in every panel, and one legend below the panels names
  them (a group missing from a panel cannot shift the others' colors). Past ten
  groups the colors repeat with another line style.
  """
  styles = {labels[k]: {"color": f"C{i % 10}", "linestyle": _LINESTYLES[i // 10 % 4]}
            for i, k in enumerate(groups)}
  drawn = []
  for panel_title, ylabel, extract in panels:
    curves = [(labels[k], agg) for k, ms in groups.items()
              if (agg := _aggregate([extract(m) for m in ms])) is not None]
    if curves:
      drawn.append((panel_title, ylabel, curves))
  if not drawn:
    return False
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.lines
  import matplotlib.pyplot as plt
  ncols = min(len(drawn), 3)
  nrows = math.ceil(len(drawn) / ncols)
  shown = sorted({label for _, _, curves in drawn for label, _ in curves}, key=list(styles).index)
  # The legend sits below the panels: wide enough for its longest label (about 0.08
  # inch a character at this font size), in two columns where that fits the panels.
  longest = max(len(label) for label in shown)
  legend_cols = 2 if len(shown) > 1 and 2 * (0.08 * longest + 0.6) <= 5.2 * ncols else 1
  width = max(5.2 * ncols, legend_cols * (0.08 * longest + 0.6))
  height = 3.8 * nrows + 0.25 * math.ceil(len(shown) / legend_cols) + 0.3
  fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(width, height),
                           layout="constrained")
  for ax, (panel_title, ylabel, curves) in zip(axes.flat, drawn):
    for label, (steps, mean, lo, hi) in curves:
      style = styles[label]
      if len(steps) == 1:  # A band needs two points: show the min-max range as an error bar.
        yerr = np.clip([mean - lo, hi - mean], 0, None)  # Rounding can put the mean past min.
        ax.errorbar(steps, mean, yerr=yerr, fmt="o", capsize=4, **style)
        continue
      ax.plot(steps, mean, marker="." if len(steps) < 30 else None, **style)
      ax.fill_between(steps, lo, hi, color=style["color"], alpha=0.2, linewidth=0)
    ax.set(title=panel_title, xlabel="step", ylabel=ylabel)
    if logy:
      ax.set_yscale("log")
  for ax in axes.flat[len(drawn):]:
    ax.remove()
  handles = [matplotlib.lines.Line2D([], [], **styles[label]) for label in shown]
  fig.legend(handles, shown, loc="outside lower center", ncols=legend_cols, fontsize="small")
  fig.suptitle(title)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def _eval_keys(members: list[Member]) -> list[tuple[str, str]]:
  keys = {(row["split"], k) for m in members for row in m.metrics
          if row.get("split") in _EVAL_SPLITS for k, v in row.items()
          if k not in _NON_METRIC_KEYS and _number(v) is not None}
  return sorted(keys, key=lambda sk: (_EVAL_SPLITS.index(sk[0]), sk[1]))


def write_plots(members: list[Member], out_dir: str | Path) -> list[Path]:
  """Writes learning-curve, temperature and gradient-variance PNGs to ``out_dir/plots``.

  One learning-curve and one gradient-variance PNG per task name (``summary["task"]``):
  groups of one task with other model or data settings share its plots, their legend
  naming the settings. Curves are the mean over a group's seeds at the steps all seeds
  logged, with a shaded min-max band; the train loss is smoothed per seed by an EMA (``EMA_ALPHA``).
  Gradient variance uses a log y-axis and drops non-positive values. The temperature
  plot shows only the groups whose temperature changes during training. A plot with
  nothing to draw is not written.

  Returns:
    The paths written.
  """
  plot_dir = Path(out_dir) / "plots"
  plot_dir.mkdir(parents=True, exist_ok=True)
  groups = _groups(members)
  written = []
  for task in sorted({_task_name(ms) for ms in groups.values()}):
    task_groups = {k: ms for k, ms in groups.items() if _task_name(ms) == task}
    labels = _labels(task_groups)
    panels = [(f"train/loss (EMA α={EMA_ALPHA})", "loss",
               lambda m: _ema(_series(m, "train", "loss")))]
    panels += [(f"{split}/{key}", key, lambda m, s=split, k=key: _series(m, s, k))
               for split, key in _eval_keys([m for ms in task_groups.values() for m in ms])]
    jobs = [(f"learning_curves_{task}.png", f"Learning curves: {task}", panels, False),
            (f"gradient_variance_{task}.png", f"Gradient variance: {task}",
             [("train/grad_variance", "gradient variance",
               lambda m: _positive(_series(m, "train", "grad_variance")))], True)]
    for name, title, task_panels, logy in jobs:
      if _draw(plot_dir / name, title, task_panels, task_groups, labels, logy):
        written.append(plot_dir / name)
  # Only the schedules that change: a constant temperature is in the table already.
  temperature = [("temperature", "temperature", lambda m: _series(m, "train", "temperature"))]
  annealed = {k: ms for k, ms in groups.items()
              if any(len(set(_series(m, "train", "temperature").values())) > 1 for m in ms)}
  if annealed and _draw(plot_dir / "temperature.png", "Temperature schedules", temperature,
                        annealed, _labels(annealed, with_task=True)):
    written.append(plot_dir / "temperature.png")
  return written


def report(run_dirs: str | Path | Iterable[str | Path], out_dir: str | Path | None = None,
           select: str | None = None) -> dict:
  """Merges the members of one or more run folders and writes tables and plots.

  Args:
    run_dirs: A run folder or several; their members are pooled (same group = more seeds).
    out_dir: Output folder; defaults to the run folder when there is exactly one.
    select: A final metric, lower is better (e.g. ``valid/neg_elbo``). If given, also
      writes ``selected.md`` / ``selected.csv``: per estimator setting only the
      learning rate and decay that :func:`select_by` chooses on it.

  Returns:
    ``{"table_md", "table_csv", "plots", "members", "skipped"}``, plus
    ``"selected_md"`` and ``"selected_csv"`` with ``select``; settings that could
    not be chosen are noted in ``"skipped"``.

  Raises:
    ValueError: If no run folder is given, a run folder has no usable member,
      ``out_dir`` is missing with several run folders, or no member has ``select``.
  """
  dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
  if not dirs:
    raise ValueError("report needs at least one run folder")
  if out_dir is None and len(dirs) > 1:
    raise ValueError(f"out_dir is required when reporting {len(dirs)} run folders")
  members, skipped = [], []
  for run_dir in dirs:
    loaded = load_run(run_dir, skipped)
    if not loaded:
      raise ValueError(f"run folder {str(run_dir)!r} has no members with a summary.json")
    members += loaded
  out_dir = Path(out_dir if out_dir is not None else dirs[0])
  result = {}
  if select is not None:
    chosen, unchosen = select_by(members, select)
    chosen = set(chosen)
    result["selected_md"], result["selected_csv"] = write_tables(
        [m for m in members if group_key(m) in chosen], out_dir, stem="selected")
    skipped += unchosen
  md_path, csv_path = write_tables(members, out_dir)
  return {"table_md": md_path, "table_csv": csv_path, "plots": write_plots(members, out_dir),
          "members": len(members), "skipped": skipped, **result}
