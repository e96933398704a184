"""Cost of gumbax.diagnostics.gradient_statistics' merge of a chunk into its moments.

A chunk of ``S`` gradient samples enters the running mean and sum of squared
deviations (``diagnostics.merge_chunk``) either through masked reductions over
the sample axis and Chan et al.'s merge (``"reduce"``, several passes over the
whole chunk) or one sample at a time with Welford's update (``"rows"``: each
sample is read once while the running moments stay in cache).
``gradient_statistics`` uses the rows on CPU and the reductions elsewhere. This
script times, round-robin in one process:

* ``moments``: merging ``S`` samples of a gradient of the given shape into empty
  moments;
* ``gradient_statistics``: a study of a ``grad_fn`` returning such a gradient
  (``S`` samples in one chunk), compiled with each method.

Run: ``python -m benchmarks.statistics [--samples 64] [--shape 784x512] [--repeats 5]``.
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

METHODS = ("reduce", "rows")


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

  moments, studies = [], []
  original = diagnostics.merge_chunk
  zero = jnp.zeros(shape)
  try:
    for method in METHODS:
      moments.append(jax.jit(lambda x, mask, method=method: original(
          jnp.zeros((), jnp.int32), zero, zero, None, x, x[0], None, mask, method)[:2]))
      # A distinct grad_fn per method: each gets its own compiled program, built
      # while merge_chunk uses that method.
      def grad_fn(key, method=method):
        z = jax.random.normal(key, (2,))
        return {"w": w * z[0] + z[1], "b": jnp.full(shape[-1:], z[0])}
      diagnostics.merge_chunk = functools.partial(original, method=method)
      jax.block_until_ready(diagnostics.gradient_statistics(
          grad_fn, jax.random.key(2), n, chunk_size=n).variance)
      studies.append(lambda g=grad_fn: diagnostics.gradient_statistics(
          g, jax.random.key(2), n, chunk_size=n).variance)
  finally:
    diagnostics.merge_chunk = original

  t_moments = interleaved_medians([lambda f=f: f(x, mask) for f in moments],
                                  repeats=args.repeats, min_time=0)
  t_study = interleaved_medians(studies, repeats=args.repeats, min_time=0)
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax "
        f"{jax.__version__}, host {platform.node()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; S = {n} samples of {shape}")
  print("\n| task | reduce ms | rows ms | reduce / rows |")
  print("|---|---|---|---|")
  rows = {}
  for task, (a, b) in (("moments", t_moments), ("gradient_statistics", t_study)):
    rows[task] = {"reduce": a, "rows": b}
    print(f"| {task} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.1f} |", flush=True)
  return rows


if __name__ == "__main__":
  main()
