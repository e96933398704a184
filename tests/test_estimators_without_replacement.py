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
from gumbax.estimators._sets import beam_search, set_log_probs
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
  exact = jax.jit(gradient_fn(estimators.get("exact", distribution=problem[0]), f, {}))(
      jax.random.key(0), logits, params)
  return g(keys, logits, params), exact


# (estimator, hyperparameters, (distribution, logits shape, kind of f)); the slow
# ones are run with `-m slow`.
slow = pytest.mark.slow
CASES = [
    pytest.param("unordered_set", {"num_samples": 2}, ("categorical", (2, 3), "linear"),
                 marks=slow),
    pytest.param("unordered_set", {"num_samples": 3}, ("categorical", (2, 1, 5), "quadratic"),
                 marks=slow),
    pytest.param("unordered_set", {"num_samples": 2}, ("categorical", (2, 1, 5), "mlp"),
                 marks=slow),
    pytest.param("unordered_set", {"num_samples": 3}, ("categorical", (3, 7), "mlp"), marks=slow),
    # k = 4 > exact_max = 2: the numerical-integration path.
    ("unordered_set", {"num_samples": 4, "exact_max": 2}, ("categorical", (3, 7), "mlp")),
    pytest.param("unordered_set", {"num_samples": 3, "baseline": False},
                 ("categorical", (2, 1, 5), "mlp"), marks=slow),
    pytest.param("unordered_set", {"num_samples": 1, "baseline": False},
                 ("categorical", (2, 3), "quadratic"), marks=slow),
    pytest.param("unordered_set", {"num_samples": 2}, ("bernoulli", (2, 1), "quadratic"),
                 marks=slow),
    pytest.param("sum_and_sample", {"num_summed": 1}, ("categorical", (2, 3), "linear"),
                 marks=slow),
    pytest.param("sum_and_sample", {"num_summed": 2}, ("categorical", (2, 1, 5), "mlp"),
                 marks=slow),
    ("sum_and_sample", {"num_summed": 2, "baseline": True}, ("categorical", (3, 7), "mlp")),
    pytest.param("sum_and_sample", {"num_summed": 1, "baseline": True},
                 ("categorical", (2, 3), "linear"), marks=slow),
    pytest.param("sum_and_sample", {"num_summed": 2}, ("categorical", (3, 7), "quadratic"),
                 marks=slow),
    pytest.param("sum_and_sample", {"num_summed": 0}, ("categorical", (2, 3), "mlp"), marks=slow),
    ("sum_and_sample", {"num_summed": 1}, ("bernoulli", (2,), "mlp")),
    # Several variables per example: the joint space (stochastic beam search).
    ("unordered_set", {"num_samples": 3}, ("categorical", (2, 3, 3), "mlp")),
    pytest.param("unordered_set", {"num_samples": 5, "exact_max": 3}, ("bernoulli", (2, 3), "mlp"),
                 marks=slow),
    pytest.param("unordered_set", {"num_samples": 2}, ("categorical", (2, 2, 3), "quadratic"),
                 marks=slow),
    ("sum_and_sample", {"num_summed": 2, "baseline": True}, ("bernoulli", (2, 3), "mlp")),
    pytest.param("sum_and_sample", {"num_summed": 3}, ("categorical", (2, 3, 3), "linear"),
                 marks=slow),
    ("sum_and_sample", {"num_summed": 2, "stochastic": True}, ("categorical", (3, 7), "mlp")),
    pytest.param("sum_and_sample", {"num_summed": 2, "stochastic": True, "baseline": True},
                 ("categorical", (2, 2, 3), "mlp"), marks=slow),
]


def _case_id(case):
  name, hyper, (distribution, shape, kind) = case.values if hasattr(case, "values") else case
  return f"{name}-{'-'.join(f'{k}{v}' for k, v in hyper.items())}-{distribution}{shape}-{kind}"


@pytest.mark.parametrize("name, hyper, problem", CASES, ids=[_case_id(c) for c in CASES])
def test_unbiased_against_exact_enumeration(name, hyper, problem):
  est = estimators.get(name, distribution=problem[0], **hyper)
  samples, exact = sample_gradients(est, problem, 6000)
  assert_mean_matches(samples, exact, (name, hyper, problem))


SET_LOG_PROBS = jax.jit(set_log_probs, static_argnames=("exact", "num_points"))


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


@pytest.mark.parametrize("num_classes, k, scale", [(7, 4, 3.0), (5, 5, 1.0)])
def test_set_probabilities_match_enumeration_of_orderings(num_classes, k, scale):
  """The subset recursion and the quadrature against the sum over the k! orderings."""
  rng = np.random.default_rng(num_classes * 10 + k)
  logits = jnp.asarray(rng.normal(size=num_classes) * scale, jnp.float32)
  log_p = jax.nn.log_softmax(logits)
  p = np.exp(np.asarray(log_p, np.float64))        # the float32 inputs, in float64
  p = p / p.sum()
  for trial in range(2):
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


@pytest.mark.parametrize("logits", [
    [9.0, 8.5, 7.0, -6.0, -9.0, -12.0, 0.0],       # almost all mass in S: p(D - S) ~ 1e-5
    [-9.0, -8.0, -7.5, 6.0, 5.0, 4.0, 3.0],        # S improbable: p(S) ~ 1e-20
    [1.0, 0.5, -0.5, 0.2, -np.inf, -np.inf, 0.0],   # masked categories outside S
    [0.3, -0.2, 1.1, 0.4, -0.8, 2.0, -1.0],         # S - the whole row: p(D - S) = 0
])
def test_quadrature_matches_the_exact_recursion_in_extreme_cases(logits):
  log_p = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))
  k = 7 if logits[0] == 0.3 else 4
  s = jnp.arange(k)
  exact = SET_LOG_PROBS(log_p, s, exact=True)
  quad = SET_LOG_PROBS(log_p, s, exact=False)
  scale = 1.0 + float(jnp.max(jnp.abs(jnp.where(jnp.isfinite(log_p), log_p, 0.0))))
  for a, b in zip(exact, quad):
    assert bool(jnp.all(jnp.isfinite(a))) and bool(jnp.all(jnp.isfinite(b)))
    assert_f32_close(b, a, scale * k, ulps=32, rtol=1e-5)
  # The probability that each s came first given S sums to one.
  first = jnp.exp(log_p[s] + exact[1] - exact[0])
  assert_f32_close(jnp.sum(first), 1.0, 1.0, ulps=8 * k)


@pytest.mark.parametrize("name, hyper", [("unordered_set", {"num_samples": 3}),
                                         ("unordered_set", {"num_samples": 5, "exact_max": 2}),
                                         ("sum_and_sample", {"num_summed": 2, "baseline": True})])
def test_value_is_weighted_f_and_constant_f_has_zero_gradient(name, hyper):
  """A constant f: the built-in baselines make the logits gradient vanish, and the
  value is the constant (the weights sum to one)."""
  logits = jax.random.normal(jax.random.key(0), (4, 6)) * 2.0
  est = estimators.get(name, **hyper)
  f = lambda b: 3.0 + 0.0 * jnp.sum(b, axis=-1)
  keys = jax.random.split(jax.random.key(1), 8)

  def value_and_grad(key):
    def loss(l):
      v = est(key, l, f)
      return v.sum(), v
    return jax.grad(loss, has_aux=True)(logits)

  grads, values = jax.jit(jax.vmap(value_and_grad))(keys)
  assert_f32_close(values, 3.0, 3.0, ulps=16)
  assert_f32_close(grads, 0.0, 3.0, ulps=32)


def test_full_sets_give_the_exact_gradient():
  """k = K (unordered set) and num_summed = K - 1 (sum-and-sample) are exact."""
  logits, params, f = make_problem("categorical", (3, 5), "mlp")
  exact = jax.jit(gradient_fn(estimators.get("exact"), f, {}))(jax.random.key(0), logits, params)
  scale = 1.0 + sum(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(params))
  for est in (estimators.get("unordered_set", num_samples=5, exact_max=3),
              estimators.get("sum_and_sample", num_summed=4)):
    got = jax.jit(gradient_fn(est, f, {}))(jax.random.key(3), logits, params)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(exact)):
      assert_f32_close(a, b, scale, ulps=64, rtol=1e-5, err_msg=repr(est))


def test_masked_categories_are_never_drawn_and_gradients_stay_finite():
  inf = jnp.inf
  logits = jnp.array([[0.5, -inf, 1.0, 0.0, -inf], [-inf, 2.0, -inf, -inf, 1.0]])
  w = jnp.arange(5.0)
  f = lambda b: b @ w
  for est in (estimators.get("unordered_set", num_samples=2),
              estimators.get("sum_and_sample", num_summed=3, baseline=True)):
    run = jax.jit(jax.vmap(lambda k: (est(k, logits, f),
                                      jax.grad(lambda l: est(k, l, f).sum())(logits))))
    values, grads = run(jax.random.split(jax.random.key(0), 8))
    for value, g in zip(values, grads):
      assert bool(jnp.all(jnp.isfinite(value))) and bool(jnp.all(jnp.isfinite(g))), est
      assert bool(jnp.all(jnp.where(jnp.isinf(logits), g == 0, True))), est
  # Row 2 has two unmasked categories: k = 2 makes the estimate exact there.
  est = estimators.get("unordered_set", num_samples=2)
  exact = jax.jit(jax.grad(lambda l: estimators.get("exact")(jax.random.key(0), l, f).sum()))(
      logits)
  g = jax.jit(jax.grad(lambda l: est(jax.random.key(0), l, f).sum()))(logits)
  assert_f32_close(g[1], exact[1], 4.0, ulps=16)


def _f(b):
  return jnp.sum(b, axis=tuple(range(1, b.ndim)))


@pytest.mark.parametrize("call, exc, words", [
    (lambda: estimators.get("unordered_set", num_samples=4)(
        jax.random.key(0), jnp.zeros((2, 3)), _f), ValueError, ["num_samples", "4", "K=3"]),
    (lambda: estimators.get("unordered_set", num_samples=1), ValueError,
     ["num_samples", ">= 2", "1", "baseline=False"]),
    (lambda: estimators.get("unordered_set", num_samples=0, baseline=False), ValueError,
     ["num_samples", ">= 1", "0"]),
    (lambda: estimators.get("unordered_set", num_samples=2.0), TypeError, ["num_samples", "int"]),
    (lambda: estimators.get("unordered_set", baseline="yes"), TypeError, ["baseline", "bool"]),
    (lambda: estimators.get("unordered_set", exact_max=17), ValueError, ["exact_max", "16", "17"]),
    (lambda: estimators.get("unordered_set", num_points=4), ValueError, ["num_points", "16", "4"]),
    (lambda: estimators.get("unordered_set", distribution="bernoulli", num_samples=3)(
        jax.random.key(0), jnp.zeros((2,)), lambda b: b), ValueError, ["num_samples", "3", "K=2"]),
    (lambda: estimators.get("sum_and_sample", num_summed=3)(
        jax.random.key(0), jnp.zeros((2, 3)), _f), ValueError, ["num_summed", "3", "K=3"]),
    (lambda: estimators.get("sum_and_sample", num_summed=-1), ValueError,
     ["num_summed", ">= 0", "-1"]),
    (lambda: estimators.get("sum_and_sample", num_summed=0, baseline=True), ValueError,
     ["baseline", "num_summed", ">= 1", "0"]),
    (lambda: estimators.get("sum_and_sample", baseline=1), TypeError, ["baseline", "bool"]),
    (lambda: estimators.get("sum_and_sample", stochastic="no"), TypeError, ["stochastic", "bool"]),
    (lambda: estimators.get("sum_and_sample", num_summed=9)(
        jax.random.key(0), jnp.zeros((2, 2, 3)), _f), ValueError, ["num_summed", "9", "K^N=3^2"]),
    (lambda: estimators.get("unordered_set", distribution="bernoulli", num_samples=9)(
        jax.random.key(0), jnp.zeros((2, 3)), _f), ValueError, ["num_samples", "9", "K^N=2^3"]),
    (lambda: estimators.get("unordered_set", num_samples=3)(
        jax.random.key(0), jnp.array([0.0, -jnp.inf, 1.0, -jnp.inf]), lambda b: jnp.sum(b)),
     ValueError, ["k", "3"]),
])
def test_bad_input_errors(call, exc, words):
  with pytest.raises(exc) as info:
    call()
  for word in words:
    assert word in str(info.value), (word, str(info.value))


def test_batch_and_event_layouts_agree():
  """Logits (B, K) and (B, 1, K) are the same problem: the same key gives the same
  value and gradient; typed and legacy keys give the same joint-space sample."""
  logits = jax.random.normal(jax.random.key(0), (3, 5))
  w = jax.random.normal(jax.random.key(1), (5,))
  key = jax.random.key(2)
  est = estimators.get("unordered_set", num_samples=3)
  flat = jax.jit(jax.value_and_grad(lambda l: est(key, l, lambda b: jnp.tanh(b @ w)).sum()))
  event = jax.jit(jax.value_and_grad(lambda l: est(key, l, lambda b: jnp.tanh(b[:, 0] @ w)).sum()))
  (v1, g1), (v2, g2) = flat(logits), event(logits[:, None])
  np.testing.assert_array_equal(v1, v2)
  np.testing.assert_array_equal(g1, g2[:, 0])
  # Several variables: typed and legacy uint32 keys give the same stream.
  joint = jax.random.normal(jax.random.key(4), (3, 2, 4))
  g = lambda b: jnp.tanh(jnp.sum(b * w[None, None, :4], axis=(1, 2)))
  run = jax.jit(lambda k, l: est(k, l, g))
  np.testing.assert_array_equal(run(jax.random.key(5), joint), run(jax.random.PRNGKey(5), joint))


@pytest.mark.slow
def test_variance_below_rloo_with_the_same_number_of_evaluations():
  """Three evaluations of f each, one categorical with K = 7 per example (4 examples)
  and an MLP loss with an offset (so that baselines matter). Each estimator's
  squared error ||g - g_exact||^2 (whose mean is its total variance) is averaged over
  4000 keys; the one-sided z-test of "mean squared error below RLOO's" uses the
  threshold for ALPHA = 1e-6. Measured (seed 0): RLOO 3.18, unordered set 1.72,
  sum-and-sample with its baseline 2.14 (without it 13.0, plain REINFORCE with
  3 samples 26.1), so the expected z is far above the threshold and the test fails
  with probability far below ALPHA. The stochastic sum-and-sample (``stochastic=True``)
  is not below RLOO here (3.48, z = -5.4), so it is not asserted."""
  num_classes = 7
  logits = jax.random.normal(jax.random.key(0), (4, num_classes))
  w1 = jax.random.normal(jax.random.key(1), (num_classes, 8))
  w2 = jax.random.normal(jax.random.key(2), (8,))
  f = lambda b: jnp.tanh(b @ w1) @ w2 + 5.0
  exact = jax.grad(lambda l: estimators.get("exact")(jax.random.key(0), l, f).sum())(logits)
  keys = jax.random.split(jax.random.key(3), 4000)

  def squared_errors(est):
    grads = jax.jit(jax.vmap(lambda k: jax.grad(lambda l: est(k, l, f).sum())(logits)))(keys)
    return np.sum(np.square(np.asarray(grads, np.float64) - np.asarray(exact)), axis=(1, 2))

  rloo = squared_errors(estimators.get("rloo", num_samples=3))
  threshold = stats.norm.isf(ALPHA)
  for est in (estimators.get("unordered_set", num_samples=3),
              estimators.get("sum_and_sample", num_summed=2, baseline=True)):
    assert est.evaluations in ("num_samples", "num_summed + 1")
    errors = squared_errors(est)
    se = np.sqrt(errors.var(ddof=1) / errors.size + rloo.var(ddof=1) / rloo.size)
    z = (rloo.mean() - errors.mean()) / se
    print(est.name, errors.mean(), "rloo", rloo.mean(), "z", z)
    assert z > threshold, (est, errors.mean(), rloo.mean(), z)


def test_stochastic_beam_search_is_gumbel_top_k_of_the_joint():
  """The unordered sets drawn by stochastic beam search (N = 2 variables, K = 3, so 9
  configurations, k = 2: 36 sets) have the probabilities p(S) of drawing them without
  replacement from the joint distribution: a chi-square test at ALPHA over 20,000
  draws. The beam search without a key returns the most probable configurations."""
  log_p = jax.nn.log_softmax(jnp.array([[0.5, -0.3, 1.0], [0.2, 0.9, -1.2]]))
  joint = np.exp(np.asarray(log_p[0][:, None] + log_p[1][None, :], np.float64)).ravel()
  joint /= joint.sum()
  sets = list(itertools.combinations(range(9), 2))
  want = np.array([_brute_log_prob(joint, s_, ()) for s_ in sets])
  want = np.exp(want)
  np.testing.assert_allclose(want.sum(), 1.0, rtol=1e-9)
  n = 20_000
  draws = jax.jit(jax.vmap(lambda key: beam_search(log_p, 2, key)))(
      jax.random.split(jax.random.key(0), n))
  flat = np.asarray(draws[..., 0] * 3 + draws[..., 1])           # (n, 2) joint indices
  assert np.all(flat[:, 0] != flat[:, 1])
  lookup = {s_: i for i, s_ in enumerate(sets)}
  counts = np.bincount([lookup[tuple(sorted(r))] for r in flat.tolist()], minlength=len(sets))
  chi2 = np.sum((counts - n * want) ** 2 / (n * want))
  assert chi2 < stats.chi2.isf(ALPHA, len(sets) - 1), chi2
  # The first draw is a sample of the joint distribution itself.
  first = np.bincount(flat[:, 0], minlength=9)
  assert np.sum((first - n * joint) ** 2 / (n * joint)) < stats.chi2.isf(ALPHA, 8)
  top = np.asarray(beam_search(log_p, 4))
  np.testing.assert_array_equal(top[:, 0] * 3 + top[:, 1], np.argsort(-joint)[:4])
