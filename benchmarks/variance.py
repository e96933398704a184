"""Goal 3: cost per gradient sample of a variance study of the VAE's gradient.

The model is ``benchmarks/vae_step.py``'s VAE (batch 100, encoder 784-512-256 to
20x10 logits, decoder 200-256-512-784, relaxed Gumbel-softmax at temperature 1,
negative ELBO with the analytic KL), at fixed random parameters and a fixed random
binary batch. A gradient sample is the gradient of the negative ELBO with respect
to all parameters (encoder and decoder) for one noise key. Two tasks, ``S`` keys
each (``--samples``):

* ``gradients``: the ``S`` per-key gradients, stacked;
* ``study``: their per-coordinate mean and variance (what a variance study keeps).

Implementations, timed round-robin in one process
(:func:`benchmarks._timing.interleaved_medians`):

* ``gumbax``: :func:`gumbax.diagnostics.per_sample_gradients` (the encoder runs
  forward once; its VJP is applied to the batch of per-key logit gradients;
  ``encoder_vjp="auto"``), and for ``study``
  ``gumbax.diagnostics.gradient_statistics(..., vectorized=True)`` over
  :func:`gumbax.diagnostics.per_sample_gradient_fn` (the same gradients, the
  encoder's pass shared by all chunks), in chunks of ``--chunk-size`` samples
  (default 4 on a CPU: the chunk's gradients, about 4.5 MB each, then stay in the
  cache while their moments are taken; ``S`` elsewhere);
  ``gumbax (other mode)`` (``gradients`` only) is the same with the other
  ``encoder_vjp`` (``vmap`` on a CPU, ``map`` elsewhere), for information;
* ``hand-written JAX``: ``jax.jit(jax.vmap(jax.grad(loss)))`` over the keys
  (``study``: then ``mean`` and ``var(ddof=1)`` over the sample axis, same program);
* ``torch loop``: a Python loop over the keys, each a forward pass and
  ``torch.autograd.grad`` (``study``: running sums of the gradients and of their
  squares); ``torch.compile loop``: the same with the loss compiled.

Columns are milliseconds per gradient sample (median round time / ``S``; the torch
loops run ``--torch-samples`` keys per round) and the ratio of the torch loop's time to gumbax's (the goal on a CPU: at least 1.5).

Run: ``python -m benchmarks.variance [--samples 64] [--repeats 5]``; ``--small`` for
smoke tests; ``--torch-threads 1`` pins torch's intra-op threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gumbax
from gumbax import networks
from benchmarks import _torch
from benchmarks._timing import interleaved_medians

TAU = 1.0


def make_problem(batch, pixels, hidden, num_latents, num_classes):
  """(encoder, head, loss, encoder_params, decoder_params, x) in JAX."""
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  init = lambda k, sizes: networks.mlp_init(k, sizes,
                                            weight_init=networks.lecun_normal_untruncated)
  enc = init(k1, [pixels, *hidden, num_latents * num_classes])
  dec = init(k2, [num_latents * num_classes, *hidden[::-1], pixels])
  x = (jax.random.uniform(k3, (batch, pixels)) < 0.5).astype(jnp.float32)

  def encoder(enc_params):
    return networks.mlp_apply(enc_params, x).reshape(batch, num_latents, num_classes)

  def negative_elbo(logits, y, dec_params):
    pixel_logits = networks.mlp_apply(dec_params, y.reshape(batch, -1))
    nll = jnp.sum(optax.sigmoid_binary_cross_entropy(pixel_logits, x), axis=-1)
    log_q = jax.nn.log_softmax(logits)
    kl = jnp.sum(jnp.exp(log_q) * (log_q + np.log(num_classes)), axis=(-2, -1))
    return jnp.mean(nll + kl)

  def head(key, logits, dec_params):  # gumbax's sampler
    return negative_elbo(logits, gumbax.gumbel_softmax(key, logits, TAU), dec_params)

  def hand_loss(enc_params, dec_params, key):  # everything by hand
    logits = encoder(enc_params)
    y = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / TAU)
    return negative_elbo(logits, y, dec_params)

  return encoder, head, hand_loss, enc, dec, x


def torch_problem(torch, device, x, enc, dec, num_latents, num_classes, compiled):
  """A per-sample-loop step: () -> list of gradients (torch tensors)."""
  F = torch.nn.functional
  as_t = lambda a: torch.from_numpy(np.array(a)).to(device).requires_grad_()
  params = [as_t(layer[name]) for layer in (*enc, *dec) for name in ("w", "b")]
  n_enc = 2 * len(enc)
  tx = torch.from_numpy(np.array(x)).to(device)

  def run_mlp(ps, h):
    for i in range(0, len(ps), 2):
      h = h @ ps[i] + ps[i + 1]
      if i < len(ps) - 2:
        h = torch.relu(h)
    return h

  def loss_fn():
    logits = run_mlp(params[:n_enc], tx).view(tx.shape[0], num_latents, num_classes)
    y = F.gumbel_softmax(logits, tau=TAU)
    pixel_logits = run_mlp(params[n_enc:], y.view(tx.shape[0], -1))
    nll = F.binary_cross_entropy_with_logits(pixel_logits, tx, reduction="none").sum(-1)
    log_q = F.log_softmax(logits, -1)
    kl = (log_q.exp() * (log_q + float(np.log(num_classes)))).sum((-2, -1))
    return (nll + kl).mean()

  if compiled:
    loss_fn = _torch.compile_fn(torch, loss_fn)
    if loss_fn is None:
      return None, None

  def gradients(n):
    out = []
    for _ in range(n):
      out.append(torch.autograd.grad(loss_fn(), params))
    return _torch.Synced(torch, out)

  def study(n):
    total = [torch.zeros_like(p) for p in params]
    squares = [torch.zeros_like(p) for p in params]
    for _ in range(n):
      for g, s, q in zip(torch.autograd.grad(loss_fn(), params), total, squares):
        s.add_(g)
        q.addcmul_(g, g)
    mean = [s / n for s in total]
    var = [(q - n * m * m) / (n - 1) for q, m in zip(squares, mean)]
    return _torch.Synced(torch, (mean, var))

  return gradients, study


def fmt(seconds):
  return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      epilog="Example: python -m benchmarks.variance --samples 64 --torch-threads 1")
  parser.add_argument("--samples", type=int, default=64, help="keys per timed round (S)")
  parser.add_argument("--torch-samples", type=int, default=None,
                      help="keys per timed round of the torch loops (default: S, at most 64; "
                           "the loop's time per sample does not depend on it)")
  parser.add_argument("--batch", type=int, default=100)
  parser.add_argument("--pixels", type=int, default=784)
  parser.add_argument("--hidden", default="512,256")
  parser.add_argument("--latents", default="20x10")
  parser.add_argument("--small", action="store_true",
                      help="tiny sizes for smoke tests (batch 4, 16 pixels, 8 hidden, 2x3, S=4)")
  parser.add_argument("--chunk-size", type=int, default=None,
                      help="gumbax study: samples per chunk of gradient_statistics (default: 4 "
                           "on CPU, where a chunk's gradients then stay in cache, else S)")
  parser.add_argument("--tasks", default="gradients,study")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--min-time", type=float, default=0.0)
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--torch-compile", action="store_true",
                      help="also time the torch loop with the loss under torch.compile")
  parser.add_argument("--torch-threads", type=int, default=None)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  if args.small:
    args.batch, args.pixels, args.hidden, args.latents, args.samples = 4, 16, "8", "2x3", 4
  hidden = tuple(int(h) for h in args.hidden.split(","))
  num_latents, num_classes = (int(v) for v in args.latents.split("x"))
  n = args.samples
  chunk = args.chunk_size or (min(n, 4) if jax.default_backend() == "cpu" else n)
  n_torch = args.torch_samples or min(n, 64)
  tasks = args.tasks.split(",")
  encoder, head, hand_loss, enc, dec, x = make_problem(
      args.batch, args.pixels, hidden, num_latents, num_classes)
  keys = jax.random.split(jax.random.key(1), n)
  torch, device = _torch.load(not args.no_torch, args.torch_threads)
  other = "vmap" if jax.default_backend() == "cpu" else "map"

  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax "
        f"{jax.__version__}, {_torch.describe(torch, device)}, host {platform.node()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
  print(f"VAE: batch {args.batch}, {args.pixels}-{'-'.join(map(str, hidden))}-"
        f"({num_latents}x{num_classes}), relaxed Gumbel-softmax tau {TAU}; "
        f"S = {n} gradient samples per round ({n_torch} for the torch loops), gumbax study "
        f"in chunks of {chunk}")

  def gumbax_grads(mode):
    return jax.jit(lambda e, d, k: gumbax.diagnostics.per_sample_gradients(
        encoder, head, e, d, k, encoder_vjp=mode))

  hand_grads = jax.jit(lambda e, d, k: jax.vmap(
      jax.grad(hand_loss, argnums=(0, 1)), in_axes=(None, None, 0))(e, d, k))

  def gumbax_study(mode):
    grad_fn = gumbax.diagnostics.per_sample_gradient_fn(encoder, head, enc, dec,
                                                        encoder_vjp=mode)

    def run():
      s = gumbax.diagnostics.gradient_statistics(grad_fn, jax.random.key(1), n,
                                                 chunk_size=chunk, vectorized=True)
      return s.mean, s.variance
    return run

  @jax.jit
  def hand_study(e, d, k):
    g = hand_grads(e, d, k)
    return (jax.tree.map(lambda t: jnp.mean(t, 0), g),
            jax.tree.map(lambda t: jnp.var(t, 0, ddof=1), g))

  results = {}
  for task in tasks:
    if task == "gradients":
      labels = ["gumbax", f"gumbax ({other})", "hand-written JAX"]
      g_auto, g_other = gumbax_grads("auto"), gumbax_grads(other)
      fns = [lambda: g_auto(enc, dec, keys), lambda: g_other(enc, dec, keys),
             lambda: hand_grads(enc, dec, keys)]
    elif task == "study":
      labels = ["gumbax", "hand-written JAX"]
      fns = [gumbax_study("auto"), lambda: hand_study(enc, dec, keys)]
    else:
      parser.error(f"unknown task {task!r}; choose from gradients, study")
    if torch is not None:
      for compiled in ((False, True) if args.torch_compile else (False,)):
        grads_fn, study_fn = torch_problem(torch, device, x, enc, dec, num_latents,
                                           num_classes, compiled)
        if grads_fn is not None:
          labels.append("torch.compile loop" if compiled else "torch loop")
          fn = grads_fn if task == "gradients" else study_fn
          fns.append(lambda fn=fn: fn(n_torch))
    times = interleaved_medians(fns, repeats=args.repeats, min_time=args.min_time)
    results[task] = {label: t / (n_torch if "torch" in label else n)
                     for label, t in zip(labels, times)}

  labels = list(dict.fromkeys(label for row in results.values() for label in row))
  print("\n| task | " + " | ".join(f"{label} ms / sample" for label in labels)
        + " | hand-written / gumbax | torch loop / gumbax |")
  print("|---" * (len(labels) + 3) + "|")
  for task, row in results.items():
    cells = " | ".join(fmt(row.get(label)) for label in labels)
    hand = row["hand-written JAX"] / row["gumbax"]
    vs_torch = f"{row['torch loop'] / row['gumbax']:.2f}" if "torch loop" in row else "-"
    print(f"| {task} | {cells} | {hand:.2f} | {vs_torch} |", flush=True)
  if args.json:
    with open(args.json, "w") as fh:
      json.dump(results, fh, indent=1)
  return results


if __name__ == "__main__":
  main()
