"""Cost of gumbax.diagnostics.gradient_statistics' per-chunk sums over the sample axis.

The statistics of a chunk of ``S`` gradient samples are sums over the leading
(sample) axis. XLA's CPU backend runs such reductions far slower than a
vector-matrix product with the 0/1 mask, so ``gradient_statistics`` uses the
product on CPU (``diagnostics._masked_sum``, ``method="auto"``) and the reduction
elsewhere. This script times, round-robin in one process:

* ``sum``: one masked sum of ``S`` samples of a 784x512 gradient, as a reduction
  (``jnp.sum(jnp.where(mask, x, 0), axis=0)``) and as the product;
* ``study``: ``gradient_statistics`` of a ``grad_fn`` returning such a gradient
  (``S`` samples in one chunk), compiled with each method.

Run: ``python -m benchmarks.statistics [--samples 64] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import functools
import platform
import time

import jax
import jax.numpy as jnp

from benchmarks._timing import interleaved_medians
from gumbax import diagnostics

METHODS = ("reduce", "dot")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--samples", type=int, default=64)
  parser.add_argument("--shape", default="784x512")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  shape = tuple(int(d) for d in args.shape.split("x"))
  n = args.samples
  x = jax.random.normal(jax.random.key(0), (n, *shape))
  mask = jnp.arange(n) < n - 1
  w = jax.random.normal(jax.random.key(1), shape)

  sums, studies = [], []
  original = diagnostics._masked_sum
  try:
    for method in METHODS:
      sums.append(jax.jit(functools.partial(original, method=method)))
      # A distinct grad_fn per method: each gets its own compiled program, built
      # while _masked_sum uses that method.
      def grad_fn(key, method=method):
        z = jax.random.normal(key, (2,))
        return {"w": w * z[0] + z[1], "b": jnp.full(shape[-1:], z[0])}
      diagnostics._masked_sum = functools.partial(original, method=method)
      jax.block_until_ready(diagnostics.gradient_statistics(
          grad_fn, jax.random.key(2), n, chunk_size=n).variance)
      studies.append(lambda g=grad_fn: diagnostics.gradient_statistics(
          g, jax.random.key(2), n, chunk_size=n).variance)
  finally:
    diagnostics._masked_sum = original

  t_sum = interleaved_medians([lambda f=f: f(x, mask) for f in sums], repeats=args.repeats,
                              min_time=0)
  t_study = interleaved_medians(studies, repeats=args.repeats, min_time=0)
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax "
        f"{jax.__version__}, host {platform.node()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; S = {n} samples of {shape}")
  print("\n| task | reduce ms | dot ms | reduce / dot |")
  print("|---|---|---|---|")
  rows = {}
  for task, (a, b) in (("masked sum", t_sum), ("gradient_statistics", t_study)):
    rows[task] = {"reduce": a, "dot": b}
    print(f"| {task} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.1f} |", flush=True)
  return rows


if __name__ == "__main__":
  main()
