"""Cost of one gradient of every registered estimator, and gumbax against hand-written JAX.

Two problems (``--problems toy,vae``):

* ``toy``: one Bernoulli latent, ``f(b) = (b - t)^2`` with ``t = 0.45`` (REBAR /
  RELAX); logits shape ``(1,)``, every estimator with ``distribution="bernoulli"``.
* ``vae``: a VAE-sized decoder step: logits ``(100, 20, 10)`` (batch 100, 20
  categorical latents of 10 classes) and ``f(b)`` the negative Bernoulli
  log-likelihood of a fixed random binary batch of 100 images of 784 pixels under an
  MLP decoder 200 -> 256 -> 512 -> 784 (ReLU). ARM and DisARM support Bernoulli
  latents only; they get 200 Bernoulli latents, logits ``(100, 200)``, and the same
  decoder. ``exact`` refuses this problem (10^20 configurations per example) and its
  row says so.

Table 1, per problem and per estimator (registry defaults, plus ``reinforce`` and
``rloo`` with ``num_samples=4`` and ``gumbel_rao`` with ``num_samples=10``):

* ``ms / gradient``: median time of one jitted ``jax.grad`` of the summed surrogate
  with respect to the logits *and* the parameters ``f`` closes over (the decoder;
  ``t`` for the toy), all estimators of a problem timed round-robin by
  :func:`benchmarks._timing.interleaved_medians` in one process.
* ``f evals (traced)``: how many times the gradient program JAX builds evaluates
  ``f`` on a full sample. A marked copy of ``f`` emits a ``jax.debug.callback`` of its
  argument, and the markers are counted in ``jax.make_jaxpr`` of the gradient
  (recursing into sub-jaxprs; a ``scan`` body counts ``length`` times; a marker
  inside a while loop or a conditional prints ``?``). Under ``vmap`` the callback's
  batching rule unrolls the mapped axis, one marker per mapped element, so
  ``vmap(f)`` over ``k`` samples counts ``k``; shape checks (``jax.eval_shape``) and
  ``jax.closure_convert`` trace ``f`` without leaving a marker; the backward pass adds
  none. Each marker's operand shape is checked to be the logits' shape (the whole
  batch), so the count is in units of "f on the whole batch". The tests check that
  this count equals the number of callbacks actually executed by the jitted gradient
  (:func:`count_executed_evaluations`, which costs a second compilation). Counting
  needs no compilation; the timed program has no marker.
* ``f evals (compiled)`` (``vae`` only): what XLA actually executes after its
  optimizations (common-subexpression elimination can merge two evaluations of
  ``f`` at the same point). Counted in the optimized HLO of the timed program: the
  rows multiplied by the decoder's first layer in the forward pass (``dot`` ops
  whose output's last dimension is the first hidden width and whose op_name is a
  forward ``dot_general``, not a ``transpose`` of the backward pass), divided by the
  batch size; "in n matmul(s)" says over how many ``dot`` ops they are spread, so
  ``vmap(f)`` over 4 samples shows as ``4 in 1 matmul`` (vectorized, not a loop).
  It is a heuristic on XLA's metadata; ``?`` means it found nothing.
* ``Python calls of f``: how many times ``f``'s Python body ran while the gradient
  was traced (including ``eval_shape`` shape checks and ``closure_convert``). It
  does not grow with ``num_samples`` when evaluations are vectorized.
* ``documented``: the estimator's ``evaluations`` class attribute.

Table 2 (``vae`` only): ``relaxed``, ``straight_through_gumbel`` and
``straight_through`` against the few lines a user writes by hand
(``jax.nn.softmax((logits + jax.random.gumbel(key, shape)) / tau)``; the hard one-hot
``+ soft - stop_gradient(soft)`` trick), same temperature (the estimators' default
1.0), same ``f``, same gradient (logits and ``f``'s parameters), each pair timed
side by side with ``interleaved_medians``; the ratio is gumbax / hand (the issue's
target: at most 1.10). Two ``f``: the MLP decoder above, and a linear
``f(b) = sum(b * w)`` that makes the estimator's own arithmetic the whole cost.

Run: ``python -m benchmarks.estimators [--repeats 20] [--problems toy,vae]``.
Sizes can be shrunk (``--batch``, ``--latents``, ``--hidden``, ``--pixels``) for
smoke tests. Timings are noisy on a shared machine; compare ratios within one run.
Most of the run time on a CPU is XLA compilation, not timing: jax.random draws of
shape ``(100, 20, 10)`` take several seconds to compile there (``(100, 200)`` well
under one), for gumbax and hand-written code alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from typing import Any, Callable

import jax
from jax.extend import core as jcore
import jax.numpy as jnp
import numpy as np

from gumbax import estimators
from benchmarks._timing import interleaved_medians

TOY_TARGET = 0.45
# Rows beyond the registry defaults (the settings).
EXTRA_SETTINGS = {
    "reinforce": [dict(num_samples=4)],
    "rloo": [dict(num_samples=4)],
    "gumbel_rao": [dict(num_samples=10)],
}
SHOWN_FIELDS = ("num_samples", "baseline", "temperature", "eta")


# -- problems -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Problem:
  """Logits, the parameters ``f`` closes over, its data, and ``f(params, data, b)``.

  ``data`` (the images) is a jit argument rather than a captured constant, as in a
  training step (a captured 100 x 784 constant makes XLA's compilation far slower).
  """
  name: str
  logits: Callable[[str], jax.Array]      # distribution -> logits
  params: Any
  data: Any
  f: Callable[[Any, Any, jax.Array], jax.Array]
  batch: int | None = None                 # for the compiled-HLO count (vae only)
  hidden1: int | None = None


def toy_problem() -> Problem:
  def f(t, data, b):
    del data
    return jnp.sum((b - t) ** 2, axis=-1)
  return Problem("toy", lambda dist: jnp.asarray(np.zeros((1,), np.float32)),
                 jnp.asarray(TOY_TARGET, jnp.float32), (), f)


def vae_problem(batch=100, latents=(20, 10), hidden=(256, 512), pixels=784) -> Problem:
  n, k = latents
  widths = (n * k,) + tuple(hidden) + (pixels,)
  # NumPy data (no XLA compilation per array); He-initialized decoder.
  rng = np.random.default_rng(0)
  params = [(jnp.asarray(rng.standard_normal((a, b)) * math.sqrt(2.0 / a), jnp.float32),
             jnp.asarray(np.zeros((b,)), jnp.float32))
            for a, b in zip(widths[:-1], widths[1:])]
  images = jnp.asarray(rng.random((batch, pixels)) < 0.5, jnp.float32)
  cat_logits = jnp.asarray(rng.standard_normal((batch, n, k)), jnp.float32)

  def f(params, images, b):
    h = b.reshape(b.shape[0], -1)
    for i, (w, c) in enumerate(params):
      h = h @ w + c[None]
      if i < len(params) - 1:
        h = jax.nn.relu(h)
    # Negative Bernoulli log-likelihood of the images, one value per example.
    return jnp.sum(jax.nn.softplus(h) - images * h, axis=-1)

  def logits(dist):
    return cat_logits if dist == "categorical" else cat_logits.reshape(batch, n * k)

  return Problem("vae", logits, params, images, f, batch=batch, hidden1=widths[1])


# -- one gradient ---------------------------------------------------------------

def gradient_fn(est, problem: Problem, f_wrap=lambda f: f, jit=True):
  """``(logits, params, key, cv, data) -> grads`` for the logits and ``f``'s parameters."""
  def loss(logits, params, key, cv, data):
    f = f_wrap(lambda b: problem.f(params, data, b))
    return jnp.sum(est(key, logits, f, cv))
  grad = jax.grad(loss, argnums=(0, 1))
  return jax.jit(grad) if jit else grad


def _marked(f):
  """``f`` that also emits a ``debug_callback`` of its argument: a marker per evaluation."""
  def marked(b):
    jax.debug.callback(_ignore, b)
    return f(b)
  return marked


def _ignore(*_):
  return None


def _count_markers(jaxpr, sample_shape) -> int | None:
  """``debug_callback`` equations in a jaxpr and its sub-jaxprs; None if inside a
  while loop or a conditional (unknown trip count). ``scan`` bodies count ``length``
  times. Every marker must receive a full sample."""
  count = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "debug_callback":
      shapes = [tuple(v.aval.shape) for v in eqn.invars]
      if shapes != [tuple(sample_shape)]:
        raise AssertionError(f"f received {shapes}; expected the full sample {sample_shape}.")
      count += 1
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, jcore.ClosedJaxpr):
          sub = sub.jaxpr
        if not isinstance(sub, jcore.Jaxpr):
          continue
        inner = _count_markers(sub, sample_shape)
        if inner is None or (inner and eqn.primitive.name in ("while", "cond")):
          return None
        count += inner * (eqn.params["length"] if eqn.primitive.name == "scan" else 1)
  return count


def count_traced_evaluations(est, problem, args, sample_shape) -> int | None:
  """Evaluations of ``f`` in the gradient program JAX builds (see the module doc).

  ``f`` is replaced by a copy that emits a ``debug_callback`` marker; the markers in
  ``jax.make_jaxpr`` of the gradient are counted. Under ``vmap`` the marker's
  batching rule unrolls the mapped axis (one marker per mapped element); shape checks
  (``eval_shape``) and ``closure_convert`` leave no marker; the backward pass adds
  none. No compilation is needed; :func:`count_executed_evaluations` runs the same
  program and counts the callbacks instead (the tests check that they agree).
  """
  loss = gradient_fn(est, problem, _marked, jit=False)
  return _count_markers(jax.make_jaxpr(loss)(*args).jaxpr, sample_shape)


def count_executed_evaluations(est, problem, args, sample_shape) -> int:
  """Like :func:`count_traced_evaluations`, by running the jitted gradient once and
  counting the callbacks XLA executes (an extra compilation)."""
  shapes = []

  def wrap(f):
    def counted(b):
      jax.debug.callback(lambda x: shapes.append(np.shape(x)), b)
      return f(b)
    return counted

  jax.block_until_ready(gradient_fn(est, problem, wrap)(*args))
  jax.effects_barrier()
  partial = [s for s in shapes if tuple(s) != tuple(sample_shape)]
  if partial:
    raise AssertionError(f"f received partial samples {partial}; expected {sample_shape}.")
  return len(shapes)


_DOT = re.compile(r"=\s*\w+\[([\d,]*)\]\{[^}]*\}\s+dot\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def count_compiled_evaluations(hlo: str, batch: int, hidden1: int):
  """Forward first-layer rows / batch in optimized HLO, and the number of dot ops."""
  rows, ops = 0, 0
  for line in hlo.splitlines():
    m = _DOT.search(line)
    if not m or not m.group(1):
      continue
    dims = [int(d) for d in m.group(1).split(",")]
    op = _OP_NAME.search(line)
    if (dims[-1] != hidden1 or op is None or "transpose(" in op.group(1)
        or not op.group(1).endswith("dot_general")):
      continue
    rows += math.prod(dims[:-1])
    ops += 1
  return rows / batch, ops


# -- table 1 --------------------------------------------------------------------

def estimator_rows(selected=None):
  """``(label, name, hyperparameters)`` for every registered estimator and extras."""
  rows = []
  for name in estimators.names():
    seen = []
    for hp in [{}] + EXTRA_SETTINGS.get(name, []):
      if any(estimators.get(name, **hp) == estimators.get(name, **s) for s in seen):
        continue
      seen.append(hp)
      label = name + "".join(f" {k}={v}" for k, v in hp.items())
      if selected is None or name in selected or label in selected:
        rows.append((label, name, hp))
  return rows


def _settings(est):
  fields = {f.name for f in dataclasses.fields(est)}
  return ", ".join(f"{k}={getattr(est, k)}" for k in SHOWN_FIELDS if k in fields) or "-"


def estimator_table(problem: Problem, rows, repeats, min_time, cache=None):
  """Prints table 1 for one problem; stores each compiled gradient in ``cache``."""
  key = jax.random.key(42)
  prepared, lines = [], []
  for label, name, hp in rows:
    if problem.name == "toy":
      dist = "bernoulli"
    else:
      supported = estimators.get(name, **hp).distributions
      dist = "categorical" if "categorical" in supported else "bernoulli"
    est = estimators.get(name, **{"distribution": dist, **hp})
    logits = problem.logits(dist)
    cv = est.init(jax.random.key(7), logits)
    args = (logits, problem.params, key, cv, problem.data)
    row = {"label": label, "settings": _settings(est),
           "logits": f"{dist} {tuple(logits.shape)}", "documented": est.evaluations}
    python_calls = [0]

    def wrap(f, python_calls=python_calls):
      def counted(b):
        python_calls[0] += 1
        return f(b)
      return counted

    try:
      compiled = gradient_fn(est, problem, wrap).lower(*args).compile()
    except ValueError as e:
      row["error"] = str(e).split(";")[0].split(" (")[0]
      lines.append(row)
      continue
    row["python"] = python_calls[0]
    row["traced"] = count_traced_evaluations(est, problem, args, logits.shape)
    if problem.batch is not None:
      evals, ops = count_compiled_evaluations(compiled.as_text(), problem.batch,
                                              problem.hidden1)
      row["compiled"] = (f"{evals:g} in {ops} matmul{'s' if ops != 1 else ''}"
                         if ops else "?")
    lines.append(row)
    prepared.append((row, lambda c=compiled, a=args: c(*a)))
    if cache is not None:
      cache[(problem.name, label)] = compiled

  times = interleaved_medians([fn for _, fn in prepared], repeats=repeats, min_time=min_time)
  for (row, _), t in zip(prepared, times):
    row["ms"] = t * 1e3

  vae = problem.batch is not None
  header = ("| estimator | settings | logits | ms / gradient | f evals (traced) | "
            + ("f evals (compiled) | " if vae else "") + "Python calls of f | documented |")
  print(f"\n### {problem.name}: one jitted gradient (logits and f's parameters)\n")
  print(header)
  print("|---" * (header.count("|") - 1) + "|")
  for row in lines:
    if "error" in row:
      cells = [row["label"], row["settings"], row["logits"], "refuses: " + row["error"], "-"]
      cells += ["-"] if vae else []
      cells += ["-", row["documented"]]
    else:
      cells = [row["label"], row["settings"], row["logits"], f"{row['ms']:.3f}",
               "?" if row["traced"] is None else str(row["traced"])]
      cells += [row["compiled"]] if vae else []
      cells += [str(row["python"]), row["documented"]]
    print("| " + " | ".join(cells) + " |", flush=True)
  return lines


# -- table 2 --------------------------------------------------------------------

def hand_relaxed(key, logits, tau):
  return jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / tau)


def hand_straight_through_gumbel(key, logits, tau):
  soft = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / tau)
  hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), soft.shape[-1], dtype=soft.dtype)
  return hard + soft - jax.lax.stop_gradient(soft)


def hand_straight_through(key, logits, tau):
  z = logits + jax.random.gumbel(key, logits.shape)
  hard = jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=z.dtype)
  soft = jax.nn.softmax(logits / tau)
  return hard + soft - jax.lax.stop_gradient(soft)


HAND = {
    "relaxed": hand_relaxed,
    "straight_through_gumbel": hand_straight_through_gumbel,
    "straight_through": hand_straight_through,
}


def linear_problem(vae: Problem) -> Problem:
  logits = vae.logits("categorical")
  w = jnp.asarray(np.random.default_rng(3).standard_normal(logits.shape[1:]), jnp.float32)
  f = lambda w, data, b: jnp.sum(b * w[None], axis=(1, 2))
  return Problem("linear f", vae.logits, w, (), f)


def comparison_table(vae: Problem, repeats, min_time, selected=None, cache=None):
  """Prints table 2; reuses table 1's compiled gumbax gradients found in ``cache``."""
  cache = {} if cache is None else cache
  key = jax.random.key(42)
  print("\n### gumbax vs hand-written JAX: one jitted gradient (logits and f's parameters)\n")
  header = "| estimator | f | gumbax ms | hand-written ms | gumbax / hand | within 10% |"
  print(header)
  print("|---" * (header.count("|") - 1) + "|")
  results = []
  for problem, f_label in [(vae, "MLP decoder"), (linear_problem(vae), "linear")]:
    logits = problem.logits("categorical")
    for name, hand in HAND.items():
      if selected is not None and name not in selected:
        continue
      est = estimators.get(name)
      tau = est.temperature

      def hand_loss(logits, params, key, cv, data, hand=hand, tau=tau, problem=problem):
        del cv
        return jnp.sum(problem.f(params, data, hand(key, logits, tau)))

      ours = cache.get((problem.name, name)) or gradient_fn(est, problem)
      theirs = jax.jit(jax.grad(hand_loss, argnums=(0, 1)))
      args = (logits, problem.params, key, {}, problem.data)
      g_ours, g_hand = ours(*args), theirs(*args)
      for a, b in zip(jax.tree_util.tree_leaves(g_ours), jax.tree_util.tree_leaves(g_hand)):
        assert a.shape == b.shape and np.all(np.isfinite(np.asarray(b)))
      t_ours, t_hand = interleaved_medians([lambda: ours(*args), lambda: theirs(*args)],
                                           repeats=repeats, min_time=min_time)
      ratio = t_ours / t_hand
      results.append((name, f_label, ratio))
      print(f"| {name} | {f_label} | {t_ours * 1e3:.3f} | {t_hand * 1e3:.3f} | {ratio:.2f} "
            f"| {'yes' if ratio <= 1.10 else 'no'} |", flush=True)
  return results


# -- main -----------------------------------------------------------------------

def _pair(text, sep, n=None):
  values = tuple(int(v) for v in text.split(sep))
  if n is not None and len(values) != n:
    raise argparse.ArgumentTypeError(f"expected {n} integers separated by {sep!r}: {text!r}")
  return values


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--problems", default="toy,vae", help="comma list of toy, vae")
  parser.add_argument("--estimators", default=None,
                      help="comma list of names or row labels (default: all; also filters "
                      "the hand-written comparison)")
  parser.add_argument("--no-compare", action="store_true", help="skip the hand-written table")
  parser.add_argument("--batch", type=int, default=100)
  parser.add_argument("--latents", type=lambda s: _pair(s, "x", 2), default=(20, 10),
                      help="N x K categorical latents, e.g. 20x10")
  parser.add_argument("--hidden", type=lambda s: _pair(s, ","), default=(256, 512))
  parser.add_argument("--pixels", type=int, default=784)
  parser.add_argument("--min-time", type=float, default=0.05,
                      help="seconds a timed round of one function lasts at least")
  args = parser.parse_args(argv)
  problems = [p.strip() for p in args.problems.split(",") if p.strip()]
  unknown = sorted(set(problems) - {"toy", "vae"})
  if unknown:
    parser.error(f"unknown problem(s) {unknown}; choose from toy, vae")
  selected = None if args.estimators is None else set(args.estimators.split(","))

  device = jax.devices()[0]
  print(f"device: {device.platform} ({device.device_kind}), jax {jax.__version__}, "
        f"repeats={args.repeats}")
  rows = estimator_rows(selected)
  results, cache = {}, {}
  vae = vae_problem(args.batch, args.latents, args.hidden, args.pixels)
  for name in problems:
    problem = toy_problem() if name == "toy" else vae
    results[name] = estimator_table(problem, rows, args.repeats, args.min_time, cache)
  if "vae" in problems and not args.no_compare:
    results["compare"] = comparison_table(vae, args.repeats, args.min_time, selected, cache)
  return results


if __name__ == "__main__":
  main()
