"""Forward+backward speed of gumbax's relaxed samplers against hand-written JAX.

For each shape, times one jitted ``jax.vjp`` (the sample and the gradient of the
logits for a fixed random cotangent) of

* ``gumbax.gumbel_softmax`` (soft and hard) and ``gumbax.relaxed_bernoulli``,
* the lines a user writes by hand: ``jax.nn.softmax((logits +
  jax.random.gumbel(key, shape)) / tau)`` (and the sigmoid analogue),
* optionally PyTorch's ``F.gumbel_softmax`` (``--torch``), eager.

Run: ``python -m benchmarks.sampling [--repeats 30] [--torch]``. Prints a Markdown
table of medians and the gumbax / hand-written ratio (below 1 means gumbax is
faster). Timings are medians of interleaved rounds in one process.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import gumbax
from benchmarks._timing import interleaved_medians

SHAPES = [(65536, 10), (1024, 1024), (64, 32768)]
TAU = 0.5


def _vjp_fn(sample):
  @jax.jit
  def run(key, logits, cotangent):
    y, pullback = jax.vjp(lambda l: sample(key, l), logits)
    return y, pullback(cotangent)[0]
  return run


def hand_softmax(key, logits):
  return jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / TAU)


def hand_softmax_hard(key, logits):
  y = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / TAU)
  hard = jax.nn.one_hot(jnp.argmax(y, -1), y.shape[-1], dtype=y.dtype)
  return hard + y - jax.lax.stop_gradient(y)


def hand_bernoulli(key, logits):
  return jax.nn.sigmoid((logits + jax.random.logistic(key, logits.shape)) / TAU)


CASES = {
    "gumbel_softmax": (lambda k, l: gumbax.gumbel_softmax(k, l, TAU), hand_softmax),
    "gumbel_softmax hard": (lambda k, l: gumbax.gumbel_softmax(k, l, TAU, hard=True),
                            hand_softmax_hard),
    "relaxed_bernoulli": (lambda k, l: gumbax.relaxed_bernoulli(k, l, TAU), hand_bernoulli),
}


def _torch_fn(shape, hard):
  import torch
  import torch.nn.functional as F
  torch.set_num_threads(max(1, torch.get_num_threads()))
  logits = torch.randn(*shape, requires_grad=True)
  cot = torch.randn(*shape)

  def run():
    y = F.gumbel_softmax(logits, tau=TAU, hard=hard)
    (g,) = torch.autograd.grad(y, logits, cot)
    return g
  return run


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--torch", action="store_true", help="also time torch (eager)")
  args = parser.parse_args(argv)
  print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}, tau={TAU}")
  header = "| function | shape | gumbax ms | hand-written JAX ms | gumbax / hand |"
  if args.torch:
    header += " torch eager ms |"
  print(header)
  print("|---" * (header.count("|") - 1) + "|")
  for name, (ours, hand) in CASES.items():
    for shape in SHAPES:
      key = jax.random.key(0)
      logits = jax.random.normal(jax.random.key(1), shape)
      cot = jax.random.normal(jax.random.key(2), shape)
      f_ours, f_hand = _vjp_fn(ours), _vjp_fn(hand)
      fns = [lambda: f_ours(key, logits, cot), lambda: f_hand(key, logits, cot)]
      if args.torch and name != "relaxed_bernoulli":
        fns.append(_torch_fn(shape, "hard" in name))
      times = interleaved_medians(fns, repeats=args.repeats)
      row = (f"| {name} | {shape} | {times[0] * 1e3:.3f} | {times[1] * 1e3:.3f} "
             f"| {times[0] / times[1]:.2f} |")
      if args.torch:
        row += f" {times[2] * 1e3:.3f} |" if len(times) > 2 else " - |"
      print(row, flush=True)


if __name__ == "__main__":
  main()
