"""Goal 2: one VAE training step with gumbax's Flax layer against hand-written JAX.

The model is the categorical VAE of Jang et al. at the issue's size: a batch of 100
binary 784-pixel images (random, fixed: data loading is not timed), encoder
784-512-256 (ReLU) to 20 categorical latents of 10 classes, decoder 200-256-512-784,
Bernoulli pixels, analytic KL to a uniform prior, Adam (lr 1e-3), temperature 1.
One step is the gradient of the mean negative ELBO and the optimizer update.

Table 1, one training run (all timed round-robin in one process by
:func:`benchmarks._timing.interleaved_medians`, blocking until ready):

* ``hand-written JAX``: parameter lists (:mod:`gumbax.networks` MLPs, plain pytrees
  and ``@``), ``jax.nn.softmax((logits + gumbel) / tau)``
  (``--estimator straight_through_gumbel``: its one-hot ``+ y - stop_gradient(y)``),
  ``optax``, one ``jax.jit`` with donated state and the key carried in it;
* ``gumbax nnx (jax.jit)``: ``nnx.Linear`` layers and
  ``gumbax.nnx.CategoricalLatent(estimator=...)``, stepped by ``jax.jit`` over
  ``nnx.split`` state (``nnx.merge`` inside), donated: Flax's fast functional API;
* ``gumbax nnx (jax.jit, flat state)``: the same step, with the state held between
  calls as the flat list of its arrays (``jax.tree.flatten`` once; the structure
  is re-applied inside the traced step), so that each call's argument handling is
  C++ (:func:`gumbax_flat_setup`);
* ``gumbax nnx (nnx.jit)``: the same model with ``nnx.jit``, as in
  ``examples/vae_nnx.py`` (adds Flax's Python-side graph handling per call);
* ``torch eager`` / ``torch.compile`` (the loss; backward and ``Adam`` eager).

Table 2, seeds vectorized: one step of 8 independent runs (8 seeds: own parameters,
optimizer state and noise) as 8 sequential calls of the single-run program against
one call of ``jax.vmap`` of it over the stacked states; the throughput ratio is
``sequential / vectorized`` (the goal: at least 7 on a GPU).

Run: ``python -m benchmarks.vae_step [--estimator relaxed] [--repeats 20]``;
``--small`` shrinks the model for smoke tests. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import gumbax.nnx
from gumbax import networks
from benchmarks import _torch
from benchmarks._timing import interleaved_medians

ESTIMATORS = ("relaxed", "straight_through_gumbel")
TAU = 1.0
LR = 1e-3


# -- hand-written JAX -----------------------------------------------------------


def init_mlp(key, sizes):
  """The hand-written model's dense layers: gumbax's plain-pytree MLP (no Flax), with
  normal weights of variance 1 / fan_in."""
  return networks.mlp_init(key, sizes, weight_init=networks.lecun_normal_untruncated)


def mlp(layers, h):
  return networks.mlp_apply(layers, h)


def hand_negative_elbo(params, x, key, num_latents, num_classes, estimator):
  logits = mlp(params["encoder"], x).reshape(x.shape[0], num_latents, num_classes)
  y = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / TAU)
  if estimator == "straight_through_gumbel":
    one_hot = jax.nn.one_hot(jnp.argmax(y, -1), num_classes, dtype=y.dtype)
    y = one_hot + y - jax.lax.stop_gradient(y)
  pixel_logits = mlp(params["decoder"], y.reshape(x.shape[0], -1))
  nll = jnp.sum(optax.sigmoid_binary_cross_entropy(pixel_logits, x), axis=-1)
  log_q = jax.nn.log_softmax(logits)
  kl = jnp.sum(jnp.exp(log_q) * (log_q + np.log(num_classes)), axis=(-2, -1))
  return jnp.mean(nll + kl)


def hand_setup(seed, sizes, num_latents, num_classes, estimator):
  """(state, step): state = (params, opt_state, key); step(state, x) -> (state, loss)."""
  tx = optax.adam(LR)

  def step(state, x):
    params, opt_state, key = state
    key, sub = jax.random.split(key)
    loss, grads = jax.value_and_grad(hand_negative_elbo)(
        params, x, sub, num_latents, num_classes, estimator)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, key), loss

  return _hand_init(sizes, num_latents, num_classes)(jnp.uint32(seed)), step


@functools.lru_cache
def _hand_init(sizes, num_latents, num_classes):
  """One jitted program for all initializers, compiled once per problem (seed traced)."""
  pixels, hidden = sizes

  @jax.jit
  def init(seed):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    params = {"encoder": init_mlp(k1, [pixels, *hidden, num_latents * num_classes]),
              "decoder": init_mlp(k2, [num_latents * num_classes, *hidden[::-1], pixels])}
    return params, optax.adam(LR).init(params), k3
  return init


# -- gumbax: Flax NNX with CategoricalLatent ---------------------------------------


class GumbaxVAE(nnx.Module):
  """Encoder MLP -> gumbax.nnx.CategoricalLatent -> decoder MLP (Bernoulli pixels)."""

  def __init__(self, sizes, num_latents, num_classes, estimator, *, rngs):
    pixels, hidden = sizes
    widths = [pixels, *hidden]
    self.encoder = nnx.List([nnx.Linear(m, n, rngs=rngs) for m, n in zip(widths[:-1], widths[1:])])
    self.latent = gumbax.nnx.CategoricalLatent(
        hidden[-1], num_latents, num_classes, estimator=estimator, temperature=TAU,
        kl="analytic", rngs=rngs)
    widths = [num_latents * num_classes, *hidden[::-1], pixels]
    self.decoder = nnx.List([nnx.Linear(m, n, rngs=rngs) for m, n in zip(widths[:-1], widths[1:])])

  def __call__(self, x, *, deterministic=None):
    h = x
    for layer in self.encoder:
      h = jax.nn.relu(layer(h))
    out = self.latent(h, deterministic=deterministic)
    h = out.sample.reshape(x.shape[0], -1)
    for i, layer in enumerate(self.decoder):
      h = layer(h)
      if i < len(self.decoder) - 1:
        h = jax.nn.relu(h)
    nll = jnp.sum(optax.sigmoid_binary_cross_entropy(h, x), axis=-1)
    return jnp.mean(nll + out.kl)


def gumbax_model(seed, sizes, num_latents, num_classes, estimator):
  return _gumbax_init(sizes, num_latents, num_classes, estimator)(jnp.uint32(seed))


@functools.lru_cache
def _gumbax_init(sizes, num_latents, num_classes, estimator):
  """One jitted program for all initializers, compiled once per problem (seed traced)."""
  @nnx.jit
  def init(seed):
    model = GumbaxVAE(sizes, num_latents, num_classes, estimator,
                      rngs=nnx.Rngs(params=jax.random.key(seed),
                                    gumbel=jax.random.key(seed + 1)))
    return model, nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)
  return init


def gumbax_setup(seed, sizes, num_latents, num_classes, estimator):
  """(graphdef, state, step) for Flax's functional API: step(state, x) -> (state, loss)."""
  graphdef, state = nnx.split(gumbax_model(seed, sizes, num_latents, num_classes, estimator))

  def step(state, x):
    model, optimizer = nnx.merge(graphdef, state)
    loss, grads = nnx.value_and_grad(lambda m: m(x, deterministic=False))(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss

  return state, step


def gumbax_flat_setup(seed, sizes, num_latents, num_classes, estimator):
  """:func:`gumbax_setup` with the state kept as a flat list of arrays between calls.

  ``jax.jit`` flattens an ``nnx.State`` argument and rebuilds the returned one in
  Python on every call; a list of arrays is flattened in C++. The tree structure is
  applied inside the traced step, so the compiled program is the same.
  """
  state, step = gumbax_setup(seed, sizes, num_latents, num_classes, estimator)
  leaves, treedef = jax.tree.flatten(state)

  def flat_step(leaves, x):
    new_state, loss = step(jax.tree.unflatten(treedef, leaves), x)
    new_leaves, new_treedef = jax.tree.flatten(new_state)
    if new_treedef != treedef:
      raise ValueError("the step changed the state's structure; a flat state cannot carry it")
    return new_leaves, loss

  return leaves, flat_step


@nnx.jit
def nnx_jit_step(model, optimizer, x):
  loss, grads = nnx.value_and_grad(lambda m: m(x, deterministic=False))(model)
  optimizer.update(model, grads)
  return loss


# -- PyTorch --------------------------------------------------------------------


def torch_setup(torch, device, sizes, num_latents, num_classes, estimator, compiled):
  nn, F = torch.nn, torch.nn.functional
  pixels, hidden = sizes
  torch.manual_seed(0)

  def stack(widths):
    layers = []
    for i, (m, n) in enumerate(zip(widths[:-1], widths[1:])):
      layers.append(nn.Linear(m, n))
      if i < len(widths) - 2:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)

  encoder = stack([pixels, *hidden, num_latents * num_classes]).to(device)
  decoder = stack([num_latents * num_classes, *hidden[::-1], pixels]).to(device)
  opt = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=LR)
  hard = estimator == "straight_through_gumbel"

  def loss_fn(x):
    logits = encoder(x).view(x.shape[0], num_latents, num_classes)
    y = F.gumbel_softmax(logits, tau=TAU, hard=hard)
    pixel_logits = decoder(y.view(x.shape[0], -1))
    nll = F.binary_cross_entropy_with_logits(pixel_logits, x, reduction="none").sum(-1)
    log_q = F.log_softmax(logits, -1)
    kl = (log_q.exp() * (log_q + float(np.log(num_classes)))).sum((-2, -1))
    return (nll + kl).mean()

  if compiled:
    loss_fn = _torch.compile_fn(torch, loss_fn)
    if loss_fn is None:
      return None

  def step(x):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(x)
    loss.backward()
    opt.step()
    return _torch.Synced(torch, loss)

  return step


# -- the tables -----------------------------------------------------------------


def fmt(seconds):
  return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      epilog="Example: python -m benchmarks.vae_step --estimator straight_through_gumbel")
  parser.add_argument("--estimator", default="relaxed", choices=ESTIMATORS)
  parser.add_argument("--batch", type=int, default=100)
  parser.add_argument("--pixels", type=int, default=784)
  parser.add_argument("--hidden", default="512,256", help="encoder widths (decoder mirrors)")
  parser.add_argument("--latents", default="20x10", help="NUM_LATENTSxNUM_CLASSES")
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--seed-implementations", default="gumbax,flat,hand",
                      help="rows of the seeds table, comma-separated: gumbax, flat, hand")
  parser.add_argument("--small", action="store_true",
                      help="a tiny model for smoke tests (batch 4, 16 pixels, 8 hidden, 2x3)")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--min-time", type=float, default=0.05)
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--no-torch-compile", action="store_true")
  parser.add_argument("--torch-threads", type=int, default=None)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  if args.small:
    args.batch, args.pixels, args.hidden, args.latents = 4, 16, "8", "2x3"
  hidden = tuple(int(h) for h in args.hidden.split(","))
  num_latents, num_classes = (int(v) for v in args.latents.split("x"))
  sizes = (args.pixels, hidden)
  problem = (sizes, num_latents, num_classes, args.estimator)
  x = (jax.random.uniform(jax.random.key(42), (args.batch, args.pixels)) < 0.5).astype(jnp.float32)
  torch, device = _torch.load(not args.no_torch, args.torch_threads)

  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax "
        f"{jax.__version__}, {_torch.describe(torch, device)}, host {platform.node()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
  print(f"VAE: batch {args.batch}, {args.pixels}-{'-'.join(map(str, hidden))}-"
        f"({num_latents}x{num_classes}), estimator {args.estimator}, tau {TAU}, Adam")

  # Table 1: one run.
  hand_state, hand_step = hand_setup(0, *problem)
  hand_jit = jax.jit(hand_step, donate_argnums=0)
  g_state, g_step = gumbax_setup(0, *problem)
  g_jit = jax.jit(g_step, donate_argnums=0)
  f_state, f_step = gumbax_flat_setup(0, *problem)
  f_jit = jax.jit(f_step, donate_argnums=0)
  model, optimizer = gumbax_model(0, *problem)
  holder = {"hand": hand_state, "gumbax": g_state, "flat": f_state}

  def run_hand():
    holder["hand"], loss = hand_jit(holder["hand"], x)
    return loss

  def run_gumbax():
    holder["gumbax"], loss = g_jit(holder["gumbax"], x)
    return loss

  def run_flat():
    holder["flat"], loss = f_jit(holder["flat"], x)
    return loss

  labels = ["hand-written JAX", "gumbax nnx (jax.jit)", "gumbax nnx (jax.jit, flat state)",
            "gumbax nnx (nnx.jit)"]
  fns = [run_hand, run_gumbax, run_flat, lambda: nnx_jit_step(model, optimizer, x)]
  if torch is not None:
    tx = torch.from_numpy(np.array(x)).to(device)
    for compiled in (False, True):
      if compiled and args.no_torch_compile:
        continue
      step = torch_setup(torch, device, *problem, compiled)
      if step is not None:
        labels.append("torch.compile" if compiled else "torch eager")
        fns.append(lambda step=step: step(tx))
  times = dict(zip(labels, interleaved_medians(fns, repeats=args.repeats, min_time=args.min_time)))
  hand_t = times["hand-written JAX"]
  print("\n| implementation | ms / step | / hand-written JAX |")
  print("|---|---|---|")
  for label, t in times.items():
    print(f"| {label} | {fmt(t)} | {t / hand_t:.2f} |")

  # Host-side cost per call of passing the state through jax.jit: flattening the
  # argument and rebuilding the returned pytree (nnx.State is flattened in Python).
  g_tree = jax.tree.structure(holder["gumbax"])
  h_tree = jax.tree.structure(holder["hand"])
  g_leaves, h_leaves = jax.tree.leaves(holder["gumbax"]), jax.tree.leaves(holder["hand"])
  pytree_times = interleaved_medians(
      [lambda: jax.tree.flatten(holder["hand"]), lambda: jax.tree.unflatten(h_tree, h_leaves),
       lambda: jax.tree.flatten(holder["gumbax"]), lambda: jax.tree.unflatten(g_tree, g_leaves)],
      repeats=args.repeats, min_time=0.01)
  print(f"\nstate pytree per call (host): hand-written flatten {pytree_times[0] * 1e6:.0f} us + "
        f"unflatten {pytree_times[1] * 1e6:.0f} us ({len(h_leaves)} leaves); gumbax nnx.State "
        f"flatten {pytree_times[2] * 1e6:.0f} us + unflatten {pytree_times[3] * 1e6:.0f} us "
        f"({len(g_leaves)} leaves)")

  # Table 2: seeds vectorized.
  n = args.seeds
  rows = []
  # The sequential runs call Table 1's compiled single-run programs (one program
  # serves every seed: same structure and shapes).
  implementations = (("gumbax", "gumbax nnx (jax.jit)", gumbax_setup, g_step, g_jit),
                     ("flat", "gumbax nnx (jax.jit, flat state)", gumbax_flat_setup, f_step,
                      f_jit),
                     ("hand", "hand-written JAX", hand_setup, hand_step, hand_jit))
  for short, name, setup, step, single in implementations:
    if short not in args.seed_implementations.split(","):
      continue
    states = [setup(s, *problem)[0] for s in range(n)]
    vectorized = jax.jit(jax.vmap(step, in_axes=(0, None)), donate_argnums=0)
    box = {"seq": states, "vec": jax.tree.map(lambda *xs: jnp.stack(xs), *states)}

    def sequential(box=box, single=single):
      losses = []
      for i in range(n):
        box["seq"][i], loss = single(box["seq"][i], x)
        losses.append(loss)
      return losses

    def vmapped(box=box, vectorized=vectorized):
      box["vec"], losses = vectorized(box["vec"], x)
      return losses

    t_seq, t_vec = interleaved_medians([sequential, vmapped], repeats=args.repeats,
                                       min_time=args.min_time)
    rows.append({"implementation": name, "sequential_s": t_seq, "vectorized_s": t_vec,
                 "throughput_ratio": t_seq / t_vec})
  print(f"\n| implementation | {n} sequential runs, ms / step | {n} seeds in one vmap, "
        "ms / step | throughput ratio |")
  print("|---|---|---|---|")
  for r in rows:
    print(f"| {r['implementation']} | {fmt(r['sequential_s'])} | {fmt(r['vectorized_s'])} | "
          f"{r['throughput_ratio']:.2f} |")
  result = {"single": {k: v for k, v in times.items()}, "seeds": rows,
            "pytree_s": dict(zip(["hand_flatten", "hand_unflatten", "gumbax_flatten",
                                  "gumbax_unflatten"], pytree_times))}
  seeds = {r["implementation"]: r["throughput_ratio"] for r in rows}
  ratio = seeds.get("gumbax nnx (jax.jit)")
  print(f"\ngumbax / hand-written: {times['gumbax nnx (jax.jit)'] / hand_t:.2f}, flat state "
        f"{times['gumbax nnx (jax.jit, flat state)'] / hand_t:.2f} (goal <= 1.10); "
        f"gumbax {n}-seed throughput ratio: {'-' if ratio is None else f'{ratio:.2f}'} "
        "(goal >= 7 on a GPU)", flush=True)
  if args.json:
    with open(args.json, "w") as fh:
      json.dump(result, fh, indent=1)
  return result


if __name__ == "__main__":
  main()
