"""What the commands print on stderr: one-line messages and progress bars."""

from __future__ import annotations

import sys

__all__ = ["progress_bar", "say"]


def say(message: str) -> None:
  """Prints ``message`` on stderr at once (it is not buffered behind a progress bar)."""
  print(message, file=sys.stderr, flush=True)


def progress_bar(enabled: bool, total: int, initial: int, desc: str):
  """A tqdm progress bar on stderr (step, ETA, rate), or None when not ``enabled``."""
  if not enabled:
    return None
  from tqdm import tqdm
  return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
              file=sys.stderr, mininterval=0.5)
