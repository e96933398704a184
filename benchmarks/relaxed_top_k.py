"""Forward+backward of ``gumbax.relaxed_top_k`` against the same relaxation by hand.

For each shape ``(rows, n)`` and subset size ``k``, times one jitted ``jax.vjp`` (the
relaxed k-hot sample, then the logits' gradient for a fixed random cotangent) of

* ``gumbax``: ``gumbax.relaxed_top_k(key, logits, k, TAU)``;
* ``hand_scan``: Xie & Ermon's reference recursion as a user writes it in JAX,
  ``alpha = logits + g``, then ``k`` times ``alpha += log(max(1 - p, tiny))``,
  ``p = softmax(alpha / tau)``, ``y += p``, in a ``lax.scan``;
* ``hand_loop``: the same recursion in a Python loop (unrolled into the jaxpr).

Noise is float32 ``jax.random.gumbel`` with the same key. All columns of a row are
timed round-robin in one process (:func:`benchmarks._timing.interleaved_medians`:
medians after warm-up, blocking until ready). ``ratio`` is gumbax's time over the
faster hand-written one.

Run: ``python -m benchmarks.relaxed_top_k`` (the default shapes: ``128x784`` k=50,
``1024x100`` k=10, ``16x10000`` k=100); ``--cases 64x20:5`` picks cases
(``ROWSxN:K``, comma-separated). Prints a Markdown table; ``--json PATH`` also writes
the rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp

import gumbax
from benchmarks._timing import interleaved_medians

CASES = [((128, 784), 50), ((1024, 100), 10), ((16, 10000), 100)]
TAU = 0.5
COLUMNS = ("gumbax", "hand_scan", "hand_loop")
HEADER = ("| shape | k | gumbax (ms) | hand, scan (ms) | hand, loop (ms) | "
          "gumbax / best hand |")


def gumbax_fn(k):
  return lambda key, l: gumbax.relaxed_top_k(key, l, k, TAU)


def _hand_step(alpha, p):
  """Xie & Ermon's step: down-weight the last choice, then a tempered softmax."""
  alpha = alpha + jnp.log(jnp.maximum(1.0 - p, jnp.finfo(alpha.dtype).tiny))
  return alpha, jax.nn.softmax(alpha / TAU, axis=-1)


def hand_scan_fn(k):
  def sample(key, l):
    alpha = l + jax.random.gumbel(key, l.shape, jnp.float32)

    def step(carry, _):
      alpha, p, y = carry
      alpha, p = _hand_step(alpha, p)
      return (alpha, p, y + p), None

    zero = jnp.zeros_like(alpha)
    (_, _, y), _ = jax.lax.scan(step, (alpha, zero, zero), None, length=k)
    return y
  return sample


def hand_loop_fn(k):
  def sample(key, l):
    alpha = l + jax.random.gumbel(key, l.shape, jnp.float32)
    p = y = jnp.zeros_like(alpha)
    for _ in range(k):
      alpha, p = _hand_step(alpha, p)
      y = y + p
    return y
  return sample


def jax_vjp(sample):
  @jax.jit
  def run(key, logits, cotangent):
    y, pullback = jax.vjp(lambda l: sample(key, l), logits)
    return y, pullback(cotangent)[0]
  return run


def parse_cases(text):
  cases = []
  for item in text.split(","):
    shape, k = item.split(":")
    cases.append((tuple(int(d) for d in shape.split("x")), int(k)))
  return cases


def measure_row(shape, k, *, repeats, min_time):
  logits = jax.random.normal(jax.random.key(1), shape, jnp.float32)
  cotangent = jax.random.normal(jax.random.key(2), shape, jnp.float32)
  key = jax.random.key(0)
  fns = [jax_vjp(make(k)) for make in (gumbax_fn, hand_scan_fn, hand_loop_fn)]
  times = interleaved_medians([lambda f=f: f(key, logits, cotangent) for f in fns],
                              repeats=repeats, min_time=min_time)
  row = {"shape": list(shape), "k": k}
  row.update({f"{name}_s": t for name, t in zip(COLUMNS, times)})
  row["ratio"] = row["gumbax_s"] / min(row["hand_scan_s"], row["hand_loop_s"])
  return row


def format_row(r):
  return (f"| {tuple(r['shape'])} | {r['k']} | {r['gumbax_s'] * 1e3:.3f} | "
          f"{r['hand_scan_s'] * 1e3:.3f} | {r['hand_loop_s'] * 1e3:.3f} | "
          f"{r['ratio']:.2f} |")


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      epilog="Example: python -m benchmarks.relaxed_top_k --repeats 5")
  parser.add_argument("--cases", type=parse_cases, default=None,
                      help="comma-separated ROWSxN:K cases (default: the three above)")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--min-time", type=float, default=0.02,
                      help="seconds each timed round lasts at least")
  parser.add_argument("--json", default=None, help="also write the rows to this file")
  args = parser.parse_args(argv)
  cases = args.cases or CASES
  for shape, k in cases:
    if len(shape) != 2 or not 1 <= k <= shape[1]:
      parser.error(f"bad case {shape}:{k}: need ROWSxN with 1 <= K <= N")
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax "
        f"{jax.__version__}, host {platform.node()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, tau={TAU}, float32")
  print(HEADER)
  print("|---" * (HEADER.count("|") - 1) + "|", flush=True)
  rows = []
  for shape, k in cases:
    row = measure_row(shape, k, repeats=args.repeats, min_time=args.min_time)
    rows.append(row)
    print(format_row(row), flush=True)
  worst = max(rows, key=lambda r: r["ratio"])
  print(f"\nlargest gumbax / hand-written: {worst['ratio']:.2f} "
        f"({tuple(worst['shape'])}, k={worst['k']})")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)
  return rows


if __name__ == "__main__":
  main()
