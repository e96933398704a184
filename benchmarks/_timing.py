"""Side-by-side timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import jax


def block(tree):
  return jax.tree_util.tree_map(
      lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree)


def interleaved_medians(fns: Sequence[Callable[[], object]], *, repeats: int = 30,
                        warmup: int = 3, min_time: float = 0.05) -> list[float]:
  """Median seconds per call of each thunk, measured round-robin in one process.

  Each round runs every function once (after warm-up), in turn, so slow drifts of
  the machine affect all of them alike; a round's call is repeated until it lasts at
  least ``min_time`` seconds to beat timer resolution.
  """
  for fn in fns:
    for _ in range(warmup):
      block(fn())
  inner = []
  for fn in fns:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time:
      block(fn())
      n += 1
    inner.append(max(1, n))
  samples: list[list[float]] = [[] for _ in fns]
  for _ in range(repeats):
    for i, fn in enumerate(fns):
      start = time.perf_counter()
      for _ in range(inner[i]):
        out = fn()
      block(out)
      samples[i].append((time.perf_counter() - start) / inner[i])
  return [statistics.median(s) for s in samples]
