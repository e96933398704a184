"""Goal 1: forward+backward of the relaxed samplers against the copy bandwidth.

For each function (``gumbel_softmax`` soft and hard, ``relaxed_bernoulli``), logits
dtype (float32; bfloat16 with float32 noise) and shape, times one jitted
``jax.vjp`` (the sample, then the logits' gradient for a fixed random cotangent) of

* gumbax, with the default (threefry) key and with an ``rbg`` key
  (``jax.random.key(0, impl="rbg")``, which gumbax accepts as any typed key);
* the lines a user writes by hand, ``jax.nn.softmax((logits + jax.random.gumbel(key,
  shape)) / tau)`` (one-hot ``+ y - stop_gradient(y)`` for hard; the sigmoid of
  logistic noise for Bernoulli), noise in float32 and the result cast back to the
  logits' dtype, with both keys;
* PyTorch eager and ``torch.compile`` (same maths, float32 noise;
  ``torch.autograd.grad`` for the backward), when torch is installed;
* ``lean``, a prototype with leaner residuals (:mod:`benchmarks._prototypes`);
* a copy, ``x + 1`` on a float32 array of the same element count (8 bytes per
  element read+written), on the same device.

All columns of a row are timed round-robin in one process
(:func:`benchmarks._timing.interleaved_medians`: medians after warm-up, blocking
until ready). ``% copy`` is the achieved bandwidth of the least-traffic
implementation, 20 bytes per element in float32 (read logits, write sample; read
cotangent and saved sample, write gradient) and 10 in bfloat16, over the copy
bandwidth: ``bytes * elements / time / (8 * elements / copy time)``.

Run: ``python -m benchmarks.fwd_bwd`` (the issue's three shapes; about 42M to 67M
elements each, larger than any cache). ``--scale 8`` divides the first dimension by
8 (for CPUs); ``--shapes 64x10`` picks shapes; ``--no-torch`` drops the torch
columns. Prints a Markdown table; ``--json PATH`` also writes the rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp

import gumbax
from benchmarks import _prototypes
from benchmarks import _torch
from benchmarks._timing import interleaved_medians

SHAPES = [(4194304, 10), (32768, 1024), (2048, 32768)]
FUNCTIONS = ("gumbel_softmax", "gumbel_softmax_hard", "relaxed_bernoulli")
BYTES_PER_ELEMENT = {"float32": 20, "bfloat16": 10}
VARIANTS = ("gumbax_rbg", "hand_rbg", "lean")  # optional JAX columns
TAU = 0.5


# -- JAX ------------------------------------------------------------------------


def gumbax_fn(name):
  if name == "gumbel_softmax":
    return lambda k, l: gumbax.gumbel_softmax(k, l, TAU)
  if name == "gumbel_softmax_hard":
    return lambda k, l: gumbax.gumbel_softmax(k, l, TAU, hard=True)
  return lambda k, l: gumbax.relaxed_bernoulli(k, l, TAU)


def hand_fn(name):
  """What a user writes by hand: float32 noise and maths, cast back at the end."""
  def soft(k, l):
    g = jax.random.gumbel(k, l.shape, jnp.float32)
    return jax.nn.softmax((l.astype(jnp.float32) + g) / TAU, axis=-1)

  if name == "gumbel_softmax":
    return lambda k, l: soft(k, l).astype(l.dtype)
  if name == "gumbel_softmax_hard":
    def hard(k, l):
      y = soft(k, l)
      one_hot = jax.nn.one_hot(jnp.argmax(y, -1), y.shape[-1], dtype=y.dtype)
      return (one_hot + y - jax.lax.stop_gradient(y)).astype(l.dtype)
    return hard

  def bernoulli(k, l):
    noise = jax.random.logistic(k, l.shape, jnp.float32)
    return jax.nn.sigmoid((l.astype(jnp.float32) + noise) / TAU).astype(l.dtype)
  return bernoulli


def jax_vjp(sample):
  @jax.jit
  def run(key, logits, cotangent):
    y, pullback = jax.vjp(lambda l: sample(key, l), logits)
    return y, pullback(cotangent)[0]
  return run


copy = jax.jit(lambda x: x + 1)


# -- PyTorch --------------------------------------------------------------------


def torch_fn(torch, name):
  def soft(l):
    g = -torch.empty(l.shape, device=l.device, dtype=torch.float32).exponential_().log()
    return torch.softmax((l.float() + g) / TAU, dim=-1)

  if name == "gumbel_softmax":
    return lambda l: soft(l).to(l.dtype)
  if name == "gumbel_softmax_hard":
    def hard(l):
      y = soft(l)
      one_hot = torch.zeros_like(y).scatter_(-1, y.argmax(-1, keepdim=True), 1.0)
      return (one_hot - y.detach() + y).to(l.dtype)
    return hard

  def bernoulli(l):
    u = torch.rand(l.shape, device=l.device, dtype=torch.float32)
    return torch.sigmoid((l.float() + torch.log(u) - torch.log1p(-u)) / TAU).to(l.dtype)
  return bernoulli


def torch_vjp(torch, fn, logits, cotangent):
  def run():
    (g,) = torch.autograd.grad(fn(logits), logits, cotangent)
    return _torch.Synced(torch, g)
  return run


# -- the table ------------------------------------------------------------------


def parse_shapes(text):
  return [tuple(int(d) for d in s.split("x")) for s in text.split(",")]


def fmt(seconds):
  return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def measure_row(name, dtype, shape, *, torch, device, compile_torch, repeats, min_time,
                variants=VARIANTS):
  logits = jax.random.normal(jax.random.key(1), shape, jnp.float32).astype(dtype)
  cot = jax.random.normal(jax.random.key(2), shape, jnp.float32).astype(dtype)
  x = jax.random.normal(jax.random.key(3), (logits.size,), jnp.float32)
  threefry, rbg = jax.random.key(0), jax.random.key(0, impl="rbg")
  ours, hand = jax_vjp(gumbax_fn(name)), jax_vjp(hand_fn(name))
  lean = jax_vjp(_prototypes.lean_fn(name, TAU))
  candidates = {
      "gumbax": lambda: ours(threefry, logits, cot), "hand": lambda: hand(threefry, logits, cot),
      "gumbax_rbg": lambda: ours(rbg, logits, cot), "hand_rbg": lambda: hand(rbg, logits, cot),
      "lean": lambda: lean(threefry, logits, cot), "copy": lambda: copy(x)}
  labels = [k for k in candidates if k in variants or k in ("gumbax", "hand", "copy")]
  fns = [candidates[k] for k in labels]
  if torch is not None:
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    tl = torch.randn(*shape, device=device, dtype=torch.float32).to(tdtype).requires_grad_()
    tc = torch.randn(*shape, device=device, dtype=torch.float32).to(tdtype)
    labels.append("torch")
    fns.append(torch_vjp(torch, torch_fn(torch, name), tl, tc))
    if compile_torch:
      compiled = _torch.compile_fn(torch, torch_fn(torch, name))
      if compiled is not None:
        labels.append("torch_compile")
        fns.append(torch_vjp(torch, compiled, tl, tc))
  times = dict(zip(labels, interleaved_medians(fns, repeats=repeats, min_time=min_time)))
  n = logits.size
  pct = lambda t: 100.0 * BYTES_PER_ELEMENT[dtype] * times["copy"] / (8 * t)
  return {
      "function": name, "dtype": dtype, "shape": list(shape), "elements": n,
      **{f"{k}_s": v for k, v in times.items()},
      "copy_GBps": 8 * n / times["copy"] / 1e9,
      "gumbax_pct_copy": pct(times["gumbax"]), "hand_pct_copy": pct(times["hand"]),
      **{f"{k}_pct_copy": pct(times[k]) for k in ("gumbax_rbg", "lean") if k in times},
      "ratio": times["gumbax"] / times["hand"],
      "ratio_rbg": (times["gumbax_rbg"] / times["hand_rbg"]
                    if "gumbax_rbg" in times and "hand_rbg" in times else None),
  }


HEADER = ("| function | dtype | shape | gumbax ms | hand JAX ms | gumbax / hand | "
          "gumbax rbg ms | hand rbg ms | torch eager ms | torch.compile ms | copy ms "
          "(GB/s) | gumbax % copy | gumbax rbg % copy | hand % copy | lean prototype ms "
          "(% copy) |")


def pct_cell(r, key):
  return "-" if key not in r else f"{r[key]:.0f}%"


def format_row(r):
  return (f"| {r['function']} | {r['dtype']} | {tuple(r['shape'])} | {fmt(r['gumbax_s'])} | "
          f"{fmt(r['hand_s'])} | {r['ratio']:.2f} | {fmt(r.get('gumbax_rbg_s'))} | "
          f"{fmt(r.get('hand_rbg_s'))} | {fmt(r.get('torch_s'))} | "
          f"{fmt(r.get('torch_compile_s'))} | {fmt(r['copy_s'])} ({r['copy_GBps']:.1f}) | "
          f"{pct_cell(r, 'gumbax_pct_copy')} | {pct_cell(r, 'gumbax_rbg_pct_copy')} | "
          f"{pct_cell(r, 'hand_pct_copy')} | {fmt(r.get('lean_s'))} "
          f"({pct_cell(r, 'lean_pct_copy')}) |")


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      epilog="Example: python -m benchmarks.fwd_bwd --scale 8 --repeats 5")
  parser.add_argument("--shapes", type=parse_shapes, default=None,
                      help="comma-separated RxC shapes (default: the issue's three)")
  parser.add_argument("--scale", type=int, default=1,
                      help="divide each shape's first dimension by this (CPU runs)")
  parser.add_argument("--functions", default=",".join(FUNCTIONS))
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--min-time", type=float, default=0.02,
                      help="seconds each timed round lasts at least")
  parser.add_argument("--variants", default=",".join(VARIANTS),
                      help="optional JAX columns besides gumbax, hand-written and copy "
                           f"(comma list of {', '.join(VARIANTS)}, or 'none')")
  parser.add_argument("--no-torch", action="store_true", help="skip the torch columns")
  parser.add_argument("--torch-threads", type=int, default=None)
  parser.add_argument("--torch-compile", default="gumbel_softmax",
                      help="functions also timed under torch.compile (comma list, "
                           "'all' or 'none'); each compilation takes seconds")
  parser.add_argument("--torch-compile-dtypes", default="float32,bfloat16",
                      help="dtypes of the rows timed under torch.compile")
  parser.add_argument("--json", default=None, help="also write the rows to this file")
  args = parser.parse_args(argv)
  shapes = [(r // args.scale, c) for r, c in (args.shapes or SHAPES)]
  functions = args.functions.split(",")
  for f in functions:
    if f not in FUNCTIONS:
      parser.error(f"unknown function {f!r}; choose from {FUNCTIONS}")
  dtypes = args.dtypes.split(",")
  for d in dtypes:
    if d not in BYTES_PER_ELEMENT:
      parser.error(f"unknown dtype {d!r}; choose from {tuple(BYTES_PER_ELEMENT)}")
  compiled = (set(FUNCTIONS) if args.torch_compile == "all" else
              set() if args.torch_compile == "none" else set(args.torch_compile.split(",")))
  variants = () if args.variants == "none" else tuple(args.variants.split(","))
  for v in variants:
    if v not in VARIANTS:
      parser.error(f"unknown variant {v!r}; choose from {VARIANTS}")
  torch, device = _torch.load(not args.no_torch, args.torch_threads)

  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax "
        f"{jax.__version__}, {_torch.describe(torch, device)}, host {platform.node()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, tau={TAU}")
  print(HEADER)
  print("|---" * (HEADER.count("|") - 1) + "|", flush=True)
  rows = []
  for dtype in dtypes:   # float32 first: the most important rows come first
    for name in functions:
      for shape in shapes:
        row = measure_row(name, dtype, shape, torch=torch, device=device,
                          compile_torch=(name in compiled and
                                         dtype in args.torch_compile_dtypes.split(",")),
                          repeats=args.repeats,
                          min_time=args.min_time, variants=variants)
        rows.append(row)
        print(format_row(row), flush=True)
  worst = min(rows, key=lambda r: r["gumbax_pct_copy"])
  slowest = max(rows, key=lambda r: r["ratio"])
  print(f"\nlowest gumbax % of copy bandwidth: {worst['gumbax_pct_copy']:.0f}% "
        f"({worst['function']}, {worst['dtype']}, {tuple(worst['shape'])}); "
        f"largest gumbax / hand-written: {slowest['ratio']:.2f} "
        f"({slowest['function']}, {slowest['dtype']}, {tuple(slowest['shape'])})")
  if args.json:
    with open(args.json, "w") as fh:
      json.dump(rows, fh, indent=1)
  return rows


if __name__ == "__main__":
  main()
