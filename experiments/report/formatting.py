"""Cell formatting and table writing shared by the run tables and the variance tables.

Number rule of the run tables (:func:`fmt`): a finite value ``x`` with ``|x| >= 10``
is shown with two decimals (``1234.57``), any other value with four significant
digits (``0.01235``, ``3.142``); NaN and infinities print as ``nan``/``inf``/``-inf``.
A std beside a mean of ``|mean| >= 10`` gets the mean's two decimals
(``111.41 ± 0.30``); beside a smaller mean it follows the rule on its own
(:func:`fmt_std`). The variance study's cells have four significant digits whatever
their size (:func:`fmt_significant`): variances span many orders of magnitude.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def fmt(x: float) -> str:
  """Formats a number by the module rule: 2 decimals if ``|x| >= 10``, else 4 sig. digits."""
  if not math.isfinite(x):
    return str(x)
  return f"{x:.2f}" if abs(x) >= 10 else f"{x:.4g}"


def fmt_std(std: float, mean: float) -> str:
  """A std with its mean's precision: 2 decimals when ``|mean| >= 10``, else :func:`fmt`."""
  return f"{std:.2f}" if math.isfinite(std) and abs(mean) >= 10 else fmt(std)


def fmt_significant(x: Any) -> str:
  """A cell with four significant digits; text as it is, ``None`` and non-finite
  numbers as ``str`` (``None``, ``nan``, ``inf``)."""
  if isinstance(x, str):
    return x
  if x is None or not np.isfinite(x):
    return str(x)
  return f"{x:.4g}"


def csv_number(x: float | None) -> str:
  """Full-precision text for CSV; empty for undefined (``None`` or NaN)."""
  return "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(x)


def markdown(header: list[str], rows: Iterable[list[str]], *, spaced_rule: bool = True) -> str:
  """A Markdown table of string cells (``|`` in a cell is escaped), ending in a newline.

  The rule under the header is ``| --- | --- |``, or ``|---|---|`` without ``spaced_rule``.
  """
  def line(cells):
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
  rule = line(["---"] * len(header)) if spaced_rule else "|" + "---|" * len(header)
  return "\n".join([line(header), rule] + [line(r) for r in rows]) + "\n"


def write_csv(path: Path, header: list[str], rows: Iterable[list[Any]]) -> None:
  """Writes a UTF-8 CSV file: the header, then the rows (``None`` as an empty cell)."""
  with Path(path).open("w", newline="", encoding="utf-8") as handle:
    writer = csv.writer(handle)
    writer.writerow(header)
    writer.writerows(rows)
