"""Tables and plots from experiment run folders (numpy/json/csv/matplotlib).

:func:`report` loads the members of one or more run folders, groups the members that
differ only by seed and writes ``table.md``/``table.csv`` (``mean ± std`` over the
seeds of each group) and ``plots/*.png``. With ``select`` (a final metric such as
``valid/neg_elbo``, lower is better), a second table keeps, per estimator setting,
only the learning rate and decay whose seeds have the lowest mean of it: the choice
of rate by validation. The variance study (``experiments.variance``) writes its
tables and plot with :func:`write_variance_tables` and :func:`write_variance_plots`.

Modules: ``loading`` (run folders, metric rows), ``grouping`` (which members are
seeds of one group, and the text naming it), ``formatting`` (the number rule, Markdown
and CSV), ``tables`` and ``plots``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from experiments.report.grouping import (GroupKey, group_key, lr_decay, task_text,
                                         temperature_schedule, train_text)
from experiments.report.loading import (MemberResult, final_eval_samples, load_run, load_runs,
                                        read_metrics, series)
from experiments.report.plots import write_plots, write_selection_plot, write_variance_plots
from experiments.report.tables import (comparison_table, markdown_tables, select_by,
                                       write_tables, write_variance_tables)

__all__ = ["GroupKey", "MemberResult", "comparison_table", "final_eval_samples", "group_key",
           "load_run", "load_runs", "lr_decay", "markdown_tables", "read_metrics", "report",
           "select_by", "series", "task_text", "temperature_schedule", "train_text",
           "write_plots", "write_selection_plot", "write_tables", "write_variance_plots",
           "write_variance_tables"]


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
  skipped = []
  members = load_runs(dirs, skipped)
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
