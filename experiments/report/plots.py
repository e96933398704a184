"""Plots: a run's learning curves, temperatures and gradient variance per group, the
pixels a feature selector chose (from the members' ``artifacts.json``), and the
variance study's variance and bias along training (PNG, matplotlib's Agg backend).

Run plots show per group the mean over its seeds at the steps all seeds logged, with
a shaded min-max band; each group keeps one style in every panel of a figure, and
one legend below the panels names the groups.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from experiments.report.grouping import GroupKey, groups, lr_text, temperature_text
from experiments.report.loading import MemberResult, number, series

EMA_ALPHA = 0.1  # train-loss smoothing: s_t = a * x_t + (1 - a) * s_{t-1}, per logged row
_LINESTYLES = ("-", "--", ":", "-.")
_EVAL_SPLITS = ("valid", "test")
_NON_METRIC_KEYS = frozenset({"step", "split", "wall_time", "iw_samples"})

Extract = Callable[[MemberResult], dict]
Panel = tuple[str, str, Extract]  # (title, y label, member -> {step: value})


def pyplot():
  """``matplotlib.pyplot`` on the file-only Agg backend (imported on first use)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save(fig, path: Path, dpi: int) -> None:
  """Writes ``fig`` to ``path`` and closes it."""
  fig.savefig(path, dpi=dpi)
  pyplot().close(fig)


def ema(values: dict[int, float], alpha: float = EMA_ALPHA) -> dict[int, float]:
  """Exponential moving average in step order; non-finite values leave it unchanged."""
  out, state = {}, None
  for step in sorted(values):
    x = values[step]
    if math.isfinite(x):
      state = x if state is None else alpha * x + (1 - alpha) * state
    out[step] = math.nan if state is None else state
  return out


def positive(values: dict[int, float]) -> dict[int, float]:
  """The finite, positive points of a series (what a log axis can show)."""
  return {step: v for step, v in values.items() if math.isfinite(v) and v > 0}


def aggregate(curves: list[dict[int, float]]):
  """Mean, min and max over seeds at the steps every seed logged; ``None`` if none."""
  common = sorted(set.intersection(*(set(s) for s in curves))) if curves else []
  if not common:
    return None
  values = np.array([[s[t] for t in common] for s in curves], dtype=float)
  return np.array(common), values.mean(0), values.min(0), values.max(0)


def _task_name(members: list[MemberResult]) -> str:
  """The task's short name (``summary["task"]``, e.g. ``vae-categorical-20x10``),
  without the settings ``grouping.task_text`` adds: one plot per name."""
  return str(members[0].summary.get("task"))


def legend_labels(by_key: dict[GroupKey, list[MemberResult]],
                  with_task: bool = False) -> dict[GroupKey, str]:
  """Estimator names, plus temperature/lr/training length only when they vary among
  the groups. Where the task varies: the whole task (``with_task``), or else the
  settings it adds to the task's short name (e.g. ``binarization=dynamic``)."""
  vary = GroupKey(*(len({key[i] for key in by_key}) > 1 for i in range(len(GroupKey._fields))))
  labels = {}
  for key, members in by_key.items():
    settings = str(key.task).removeprefix(_task_name(members)).lstrip("-")
    parts = [f"{key.task}:" if with_task and vary.task else "", str(key.estimator),
             settings if vary.task and not with_task else ""]
    parts += ["τ=" + temperature_text(key)
              if (vary.temperature or vary.schedule) and key.temperature is not None else "",
              "lr=" + lr_text(key)
              if (vary.learning_rate or vary.lr_decay) and key.learning_rate is not None else "",
              key.train if vary.train else ""]
    labels[key] = " ".join(p for p in parts if p)
  return labels


def _figure(plt, panels: int, labels: list[str]):
  """A figure with a grid of ``panels`` subplots (at most three a row) and room for a
  legend of ``labels`` below them; returns ``(fig, axes, legend_columns)``."""
  ncols = min(panels, 3)
  nrows = math.ceil(panels / ncols)
  # The legend sits below the panels: wide enough for its longest label (about 0.08
  # inch a character at this font size), in two columns where that fits the panels.
  longest = max(len(label) for label in labels)
  legend_cols = 2 if len(labels) > 1 and 2 * (0.08 * longest + 0.6) <= 5.2 * ncols else 1
  width = max(5.2 * ncols, legend_cols * (0.08 * longest + 0.6))
  height = 3.8 * nrows + 0.25 * math.ceil(len(labels) / legend_cols) + 0.3
  fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(width, height),
                           layout="constrained")
  return fig, axes, legend_cols


def _draw_curves(ax, curves: list, styles: dict[str, dict]) -> None:
  """Mean lines with min-max bands; a single step is a point with a min-max error bar."""
  for label, (steps, mean, lo, hi) in curves:
    style = styles[label]
    if len(steps) == 1:  # A band needs two points: show the min-max range as an error bar.
      yerr = np.clip([mean - lo, hi - mean], 0, None)  # Rounding can put the mean past min.
      ax.errorbar(steps, mean, yerr=yerr, fmt="o", capsize=4, **style)
      continue
    ax.plot(steps, mean, marker="." if len(steps) < 30 else None, **style)
    ax.fill_between(steps, lo, hi, color=style["color"], alpha=0.2, linewidth=0)


def draw(path: Path, title: str, panels: list[Panel],
         by_key: dict[GroupKey, list[MemberResult]], labels: dict, logy: bool = False) -> bool:
  """One subplot per panel with data; returns False (nothing written) if none has any.

  Each group keeps one style in every panel, and one legend below the panels names
  them (a group missing from a panel cannot shift the others' colors). Past ten
  groups the colors repeat with another line style.
  """
  styles = {labels[k]: {"color": f"C{i % 10}", "linestyle": _LINESTYLES[i // 10 % 4]}
            for i, k in enumerate(by_key)}
  drawn = []
  for panel_title, ylabel, extract in panels:
    curves = [(labels[k], agg) for k, ms in by_key.items()
              if (agg := aggregate([extract(m) for m in ms])) is not None]
    if curves:
      drawn.append((panel_title, ylabel, curves))
  if not drawn:
    return False
  plt = pyplot()
  import matplotlib.lines
  shown = sorted({label for _, _, curves in drawn for label, _ in curves}, key=list(styles).index)
  fig, axes, legend_cols = _figure(plt, len(drawn), shown)
  for ax, (panel_title, ylabel, curves) in zip(axes.flat, drawn):
    _draw_curves(ax, curves, styles)
    ax.set(title=panel_title, xlabel="step", ylabel=ylabel)
    if logy:
      ax.set_yscale("log")
  for ax in axes.flat[len(drawn):]:
    ax.remove()
  handles = [matplotlib.lines.Line2D([], [], **styles[label]) for label in shown]
  fig.legend(handles, shown, loc="outside lower center", ncols=legend_cols, fontsize="small")
  fig.suptitle(title)
  save(fig, path, dpi=100)
  return True


def _eval_keys(members: list[MemberResult]) -> list[tuple[str, str]]:
  keys = {(row["split"], k) for m in members for row in m.metrics
          if row.get("split") in _EVAL_SPLITS for k, v in row.items()
          if k not in _NON_METRIC_KEYS and number(v) is not None}
  return sorted(keys, key=lambda sk: (_EVAL_SPLITS.index(sk[0]), sk[1]))


def _task_figures(task: str, task_groups: dict[GroupKey, list[MemberResult]]) -> list[tuple]:
  """``(file name, title, panels, log y)`` of a task's learning curves and gradient variance."""
  panels = [(f"train/loss (EMA α={EMA_ALPHA})", "loss",
             lambda m: ema(series(m, "train", "loss")))]
  panels += [(f"{split}/{key}", key, lambda m, s=split, k=key: series(m, s, k))
             for split, key in _eval_keys([m for ms in task_groups.values() for m in ms])]
  return [(f"learning_curves_{task}.png", f"Learning curves: {task}", panels, False),
          (f"gradient_variance_{task}.png", f"Gradient variance: {task}",
           [("train/grad_variance", "gradient variance",
             lambda m: positive(series(m, "train", "grad_variance")))], True)]


def write_plots(members: list[MemberResult], out_dir: str | Path) -> list[Path]:
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
  by_key = groups(members)
  written = []
  for task in sorted({_task_name(ms) for ms in by_key.values()}):
    task_groups = {k: ms for k, ms in by_key.items() if _task_name(ms) == task}
    labels = legend_labels(task_groups)
    for name, title, panels, logy in _task_figures(task, task_groups):
      if draw(plot_dir / name, title, panels, task_groups, labels, logy):
        written.append(plot_dir / name)
  # Only the schedules that change: a constant temperature is in the table already.
  temperature = [("temperature", "temperature", lambda m: series(m, "train", "temperature"))]
  annealed = {k: ms for k, ms in by_key.items()
              if any(len(set(series(m, "train", "temperature").values())) > 1 for m in ms)}
  if annealed and draw(plot_dir / "temperature.png", "Temperature schedules", temperature,
                       annealed, legend_labels(annealed, with_task=True)):
    written.append(plot_dir / "temperature.png")
  path = write_selection_plot(members, plot_dir / "selected_features.png")
  return written + ([path] if path else [])


def read_artifacts(member: MemberResult) -> dict:
  """The member's ``artifacts.json`` (written by the runner from ``Task.artifacts``);
  ``{}`` when it has none or it cannot be parsed."""
  path = Path(member.dir) / "artifacts.json"
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return {}
  return data if isinstance(data, dict) else {}


def selection_counts(selection: dict) -> np.ndarray:
  """How many selector nodes chose each pixel, as an image: ``selection`` is an
  artifact ``{"indices": [...], "shape": [rows, cols]}`` (row-major pixel indices,
  repeats counted)."""
  shape = tuple(int(d) for d in selection["shape"])
  counts = np.bincount(np.asarray(selection["indices"], dtype=int), minlength=math.prod(shape))
  if counts.size != math.prod(shape):
    raise ValueError(f"selected pixel indices {selection['indices']} do not fit an image of "
                     f"shape {shape}")
  return counts.reshape(shape)


def write_selection_plot(members: list[MemberResult], path: str | Path) -> Path | None:
  """One panel per group whose members have a ``selected_features`` artifact: the
  image of the pixels its lowest seed selected (white: chosen by one node; orange by
  two, red by three or more), titled with the task's short name, the
  estimator and the number of distinct pixels. Returns the path, or None (nothing
  written) when no member has the artifact."""
  panels = []
  for key, group in groups(members).items():
    chosen = [(m.summary.get("seed", 0), m) for m in group
              if "selected_features" in read_artifacts(m)]
    if not chosen:
      continue
    member = min(chosen, key=lambda sm: (sm[0] is None, sm[0] or 0))[1]
    counts = selection_counts(read_artifacts(member)["selected_features"])
    title = (f"{member.summary.get('task')}\n{key.estimator}, seed {member.summary.get('seed')}: "
             f"{int(np.count_nonzero(counts))} pixels")
    panels.append((title, counts))
  if not panels:
    return None
  plt = pyplot()
  ncols = min(len(panels), 3)
  nrows = math.ceil(len(panels) / ncols)
  fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(3.3 * ncols, 3.5 * nrows),
                           layout="constrained")
  import matplotlib.colors
  # Black: not chosen; white: one node; orange: two; red: three or more.
  colors = matplotlib.colors.ListedColormap(["black", "white", "orange", "red"])
  for ax, (title, counts) in zip(axes.flat, panels):
    ax.imshow(np.minimum(counts, 3), cmap=colors, vmin=-0.5, vmax=3.5, interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
  for ax in axes.flat[len(panels):]:
    ax.remove()
  fig.suptitle("Selected pixels: white by one node, orange by two, red by three or more",
               fontsize=9)
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  save(fig, path, dpi=80)
  return path


def resolved_bias(row: dict) -> float:
  """A variance-study row's noise-corrected squared bias, or NaN where it is within
  the sampling noise (the estimator's and the reference's)."""
  noise = row["total_variance"] / max(row.get("num_samples", 1), 1) + row.get("reference_se2", 0.0)
  value = row["debiased_squared_bias"]
  return value if value > noise else float("nan")


def write_variance_plots(rows: list[dict], out_dir: str | Path) -> list[str]:
  """The variance study's ``plots/variance.png``: variance and resolved squared bias
  vs training step per estimator, and their scatter at the last checkpoint.

  The squared bias is the noise-corrected one (``debiased_squared_bias``) and is
  drawn only where it exceeds its own noise level (:func:`resolved_bias`): unbiased
  estimators have no point there.

  Returns:
    The path written, as a string, in a list.
  """
  plt = pyplot()
  out_dir = Path(out_dir)
  (out_dir / "plots").mkdir(parents=True, exist_ok=True)
  names = list(dict.fromkeys(r["estimator"] for r in rows))
  colors, markers = plt.get_cmap("tab20"), "osD^v<>pPX*h"
  last = max(r["step"] for r in rows)
  fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
  for i, name in enumerate(names):
    style = {"color": colors(i % 20), "marker": markers[i % len(markers)], "label": name}
    mine = sorted((r for r in rows if r["estimator"] == name), key=lambda r: r["step"])
    steps = [r["step"] for r in mine]
    axes[0].plot(steps, [r["total_variance"] for r in mine], **style)
    bias = [resolved_bias(r) for r in mine]
    if any(np.isfinite(bias)):
      axes[1].plot(steps, bias, **style)
    end = mine[-1]
    if end["step"] == last and np.isfinite(resolved_bias(end)):
      axes[2].scatter([end["total_variance"]], [resolved_bias(end)], color=style["color"],
                      marker=style["marker"], label=name)
  _label_variance_axes(axes, last)
  fig.tight_layout()
  path = out_dir / "plots" / "variance.png"
  save(fig, path, dpi=110)
  return [str(path)]


def _label_variance_axes(axes, last: int) -> None:
  titles = ["gradient variance (sum over parameters)",
            "squared bias beyond sampling noise",
            f"bias vs variance at step {last} (biased estimators)"]
  for ax, title in zip(axes, titles):
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].set_xlabel("training step")
  axes[1].set_xlabel("training step")
  axes[2].set_xscale("log")
  axes[2].set_xlabel("variance")
  axes[2].set_ylabel("squared bias")
  axes[0].legend(fontsize=7, ncol=2)
