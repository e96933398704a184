"""Estimators that sample without replacement: unordered set and sum-and-sample.

Statistical tests use a false-failure rate of ALPHA = 1e-6 per test (the Bonferroni
mean test of test_estimators.py against exact enumeration).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from _tolerance import assert_f32_close
from gumbax import estimators
from gumbax.estimators.without_replacement import _set_log_probs
from test_estimators import ALPHA, assert_mean_matches, gradient_fn


def make_problem(distribution, shape, kind, seed=0):
  """Random logits, decoder parameters and f(b, params) -> one value per example."""
  keys = jax.random.split(jax.random.key(seed), 4)
  logits = jax.random.normal(keys[0], shape)
  event = shape[1:]
  d = int(np.prod(event))
  axes = lambda b: tuple(range(1, b.ndim))
  if kind == "linear":
    params = {"w": jax.random.normal(keys[1], event)}
    f = lambda b, p: jnp.sum(b * p["w"][None], axis=axes(b))
  elif kind == "quadratic":
    params = {"w": jax.random.normal(keys[1], event), "t": jax.random.normal(keys[2], event)}
    f = lambda b, p: jnp.sum(p["w"][None] * (b - p["t"][None]) ** 2, axis=axes(b))
  else:
    params = {"w1": jax.random.normal(keys[1], (d, 8)), "w2": jax.random.normal(keys[2], (8,)),
              "b1": jax.random.normal(keys[3], (8,))}
    f = lambda b, p: jnp.tanh(b.reshape(b.shape[0], -1) @ p["w1"] + p["b1"][None]) @ p["w2"]
  return logits, params, f


def sample_gradients(est, problem, num_samples, seed=0):
  logits, params, f = make_problem(*problem, seed=seed)
  g = jax.jit(jax.vmap(gradient_fn(est, f, {}), in_axes=(0, None, None)))
  keys = jax.random.split(jax.random.key(seed + 100), num_samples)
  exact = gradient_fn(estimators.get("exact", distribution=problem[0]), f, {})(
      jax.random.key(0), logits, params)
  return g(keys, logits, params), exact


# (estimator, hyperparameters, (distribution, logits shape, kind of f)).
CASES = [
    ("unordered_set", {"num_samples": 2}, ("categorical", (2, 3), "linear")),
    ("unordered_set", {"num_samples": 3}, ("categorical", (2, 1, 5), "quadratic")),
    ("unordered_set", {"num_samples": 2}, ("categorical", (2, 1, 5), "mlp")),
    ("unordered_set", {"num_samples": 3}, ("categorical", (3, 7), "mlp")),
    # k = 4 > exact_max = 2: the numerical-integration path.
    ("unordered_set", {"num_samples": 4, "exact_max": 2}, ("categorical", (3, 7), "mlp")),
    ("unordered_set", {"num_samples": 3, "baseline": False}, ("categorical", (2, 1, 5), "mlp")),
    ("unordered_set", {"num_samples": 1, "baseline": False}, ("categorical", (2, 3), "quadratic")),
    ("unordered_set", {"num_samples": 2}, ("bernoulli", (2, 1), "quadratic")),
    ("sum_and_sample", {"num_summed": 1}, ("categorical", (2, 3), "linear")),
    ("sum_and_sample", {"num_summed": 2}, ("categorical", (2, 1, 5), "mlp")),
    ("sum_and_sample", {"num_summed": 2}, ("categorical", (3, 7), "quadratic")),
    ("sum_and_sample", {"num_summed": 0}, ("categorical", (2, 3), "mlp")),
    ("sum_and_sample", {"num_summed": 1}, ("bernoulli", (2,), "mlp")),
]


@pytest.mark.parametrize("name, hyper, problem", CASES,
                         ids=[f"{n}-{h}-{p[0]}{p[1]}-{p[2]}" for n, h, p in CASES])
def test_unbiased_against_exact_enumeration(name, hyper, problem):
  est = estimators.get(name, distribution=problem[0], **hyper)
  samples, exact = sample_gradients(est, problem, 6000)
  assert_mean_matches(samples, exact, (name, hyper, problem))


SET_LOG_PROBS = jax.jit(_set_log_probs, static_argnames=("exact", "num_points"))


def _brute_log_prob(p, subset, removed):
  """log p^{D - removed}(subset) by summing the Plackett-Luce probabilities of all
  orderings of ``subset`` (float64)."""
  total = 0.0
  for order in itertools.permutations(subset):
    mass, prob = 1.0 - sum(p[x] for x in set(removed)), 1.0
    for x in order:
      prob *= p[x] / mass
      mass -= p[x]
    total += prob
  return np.log(total)


@pytest.mark.parametrize("num_classes, k, scale", [(4, 2, 1.0), (6, 3, 2.0), (7, 4, 3.0),
                                                   (9, 5, 4.0), (5, 5, 1.0)])
def test_set_probabilities_match_enumeration_of_orderings(num_classes, k, scale):
  """The subset recursion and the quadrature against the sum over the k! orderings."""
  rng = np.random.default_rng(num_classes * 10 + k)
  logits = jnp.asarray(rng.normal(size=num_classes) * scale, jnp.float32)
  log_p = jax.nn.log_softmax(logits)
  p = np.exp(np.asarray(log_p, np.float64))        # the float32 inputs, in float64
  p = p / p.sum()
  for trial in range(3):
    s = rng.permutation(num_classes)[:k]
    want_all = _brute_log_prob(p, s, ())
    want_one = np.array([_brute_log_prob(p, [x for x in s if x != y], (y,)) for y in s])
    want_two = np.array([[_brute_log_prob(p, [x for x in s if x not in (y, z)], {y, z})
                          for z in s] for y in s])
    for exact in (True, False):
      got = SET_LOG_PROBS(log_p, jnp.asarray(s), exact=exact)
      # Log-probabilities of magnitude up to ~|log p| from float32 inputs: a few
      # ulps of that scale (the quadrature itself is accurate to ~1e-10).
      scale_ = 1.0 + np.max(np.abs(np.log(p[s])))
      for g, w in zip(got, (want_all, want_one, want_two)):
        assert_f32_close(g, w, scale_ * k, ulps=32, rtol=1e-5, err_msg=f"{exact} {s}")
