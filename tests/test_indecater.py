"""IndeCateR: unbiasedness against exact enumeration, exactness where it must be
exact (one latent; a loss that is a sum over the latents), the forward value, the
size guard, bad input, and its variance against RLOO at an equal number of
evaluations of f.

Statistical tests use a false-failure rate of ALPHA = 1e-6 per test (the Bonferroni
mean test of tests/test_estimators.py).
"""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from _tolerance import assert_f32_close
from gumbax import estimators
from test_estimators import PROBLEMS, assert_mean_matches, make_problem, sample_gradients


def _grads(est, f):
  """Jitted key, logits, params -> gradients of the summed surrogate for (logits,
  params) of ``f(b, params)``."""
  return jax.jit(lambda key, logits, params: jax.grad(
      lambda l, p: jnp.sum(est(key, l, lambda b: f(b, p))), argnums=(0, 1))(logits, params))


@pytest.mark.parametrize("num_samples", [1, 2])
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_unbiased_against_exact(problem, num_samples):
  est = estimators.get("indecater", distribution=PROBLEMS[problem][0], num_samples=num_samples)
  samples, exact = sample_gradients(est, problem, 2000)
  assert_mean_matches(samples, exact, (problem, num_samples))


def _one_latent_problem(distribution, k, seed):
  """Logits with one latent per example (batch of 3) and a non-linear f(b, params)."""
  keys = jax.random.split(jax.random.key(seed), 3)
  shape = (3, 1, k) if distribution == "categorical" else (3, 1)
  logits = 2.0 * jax.random.normal(keys[0], shape)
  params = {"w": jax.random.normal(keys[1], shape[1:]), "c": jax.random.normal(keys[2], ())}
  f = lambda b, p: jnp.sum(jnp.sin(2.0 * b * p["w"][None] + p["c"]) + 0.5 * b, axis=tuple(
      range(1, b.ndim))) ** 2
  return logits, params, f


@pytest.mark.parametrize("distribution, k", [("categorical", 3),
                                             ("categorical", 7), ("bernoulli", 2)])
def test_one_latent_is_exact_enumeration(distribution, k):
  """With D = 1 the modified samples are all K configurations whatever the sample:
  the logits' estimate is the exact gradient, and so is the decoder's (the
  Rao-Blackwellized pathwise term is sum_k p(k) grad f(k)). Deterministic: a wrong
  weight, a missing term or a mixed-up axis fails it."""
  _, _, f = _one_latent_problem(distribution, k, 0)
  exact_grads = _grads(estimators.get("exact", distribution=distribution), f)
  estimates = {n: _grads(estimators.get("indecater", distribution=distribution, num_samples=n), f)
               for n in (1, 3)}
  for seed in range(2):
    logits, params, _ = _one_latent_problem(distribution, k, seed)
    exact = exact_grads(jax.random.key(0), logits, params)
    # f(b) is a square of terms of size <= |w| + |c| + 1, so its values and both
    # gradients round at ulps of that square (times the sum over K and examples).
    scale = (np.max(np.abs(params["w"])) + abs(float(params["c"])) + 1.5) ** 2 * k
    for num_samples, grads in estimates.items():
      for key_seed in range(2):
        got = grads(jax.random.key(10 + key_seed), logits, params)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(exact)):
          assert_f32_close(a, b, scale, ulps=32, rtol=1e-5,
                           err_msg=f"{distribution} K={k} seed={seed} N={num_samples}")


@pytest.mark.parametrize("distribution", ["categorical", "bernoulli"])
def test_additive_loss_is_exact_for_the_logits(distribution):
  """For f = sum_d g_d(x_d) each variable's term is exact whatever the others are,
  so with several latents (D = 4 or 6 here, in a (2, 2) or (2, 3) event per example)
  the logits' estimate is still the exact gradient, for every key."""
  shape = (2, 2, 2, 4) if distribution == "categorical" else (2, 2, 3)
  logits = jax.random.normal(jax.random.key(1), shape)
  w = jax.random.normal(jax.random.key(2), shape[1:])
  f = lambda b: jnp.sum(jnp.cos(3.0 * b * w[None]) + b * w[None], axis=tuple(range(1, b.ndim)))
  exact = jax.grad(lambda l: estimators.get("exact", distribution=distribution)(
      jax.random.key(0), l, f).sum())(logits)
  est = estimators.get("indecater", distribution=distribution, num_samples=2)
  grads = jax.jit(lambda key: jax.grad(lambda l: est(key, l, f).sum())(logits))
  scale = float(np.sum(np.abs(w)) + w.size)            # |f| is at most this
  for seed in range(3):
    got = grads(jax.random.key(seed))
    assert_f32_close(got, exact, scale, ulps=32, rtol=1e-5)


@pytest.mark.parametrize("problem", ["cat_K3_N3_mlp", "bern_N3_mlp"])
def test_forward_value_is_the_loss_at_the_samples(problem):
  """The surrogate's value is mean_n f(x^n) at the exact samples x^n drawn from
  split(key, num_samples), the same samples as the other multi-sample estimators
  (checked under jit)."""
  distribution, logits, params, f = make_problem(problem)
  est = estimators.get("indecater", distribution=distribution, num_samples=3)
  key = jax.random.key(4)
  got = jax.jit(lambda k: est(k, logits, lambda b: f(b, params)))(key)
  samples = jax.vmap(lambda k: est.sample(k, logits))(jax.random.split(key, 3))
  values = np.asarray(jax.vmap(lambda b: f(b, params))(samples))
  # f is an MLP of O(1) terms: two differently batched evaluations differ by ulps.
  assert_f32_close(got, values.mean(axis=0), 1 + np.abs(values).max(), ulps=16, rtol=1e-5)


def test_a_constant_added_to_f_changes_nothing_for_the_logits():
  """sum_k grad p_d(k) = 0: IndeCateR needs no baseline; f + c gives the same
  estimate (up to rounding at the scale of c)."""
  distribution, logits, params, f = make_problem("cat_K3_N3_mlp")
  est = estimators.get("indecater", distribution=distribution, num_samples=2)
  key = jax.random.key(3)
  grads = jax.jit(lambda c: jax.grad(lambda l: est(key, l, lambda b: f(b, params) + c).sum())(
      logits))
  g, g_shift = grads(0.0), grads(100.0)
  assert_f32_close(g_shift, g, 100.0 + 10.0, ulps=64, rtol=1e-5)
  assert float(jnp.max(jnp.abs(g))) > 1e-3              # not a trivially zero gradient


def _marked_shapes(jaxpr):
  """Shapes of the operands of every ``cumsum`` (used only by the test's f), in all
  sub-jaxprs."""
  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "cumsum":
      shapes.append(tuple(eqn.invars[0].aval.shape))
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      shapes += _marked_shapes(sub)
  return shapes


def test_evaluations_are_one_vmapped_call_of_n_d_k_points():
  """f is traced twice (a shape check and one vmapped call), each time on one batch
  of examples; the vmapped call maps over num_samples * event_size * K = 24 points.
  With pathwise="samples" a second vmapped call evaluates the 2 samples."""
  calls = []
  logits = jnp.zeros((5, 4, 3))                    # batch 5, D = 4, K = 3

  def f(b):
    calls.append(b.shape)
    return jnp.sum(jnp.cumsum(b, axis=-1), axis=(-2, -1))

  est = estimators.get("indecater", num_samples=2)
  jaxpr = jax.make_jaxpr(lambda l: est(jax.random.key(0), l, f))(logits).jaxpr
  assert len(calls) == 2 and all(c == (5, 4, 3) for c in calls), calls
  assert _marked_shapes(jaxpr) == [(24, 5, 4, 3)]
  assert type(est).evaluations.startswith("num_samples * event_size * K")
  est = estimators.get("indecater", num_samples=2, pathwise="samples")
  jaxpr = jax.make_jaxpr(lambda l: est(jax.random.key(0), l, f))(logits).jaxpr
  assert sorted(_marked_shapes(jaxpr)) == [(2, 5, 4, 3), (24, 5, 4, 3)]


@pytest.mark.parametrize("problem", ["cat_K3_N3_mlp"])
def test_pathwise_samples_option(problem):
  """pathwise="samples" gives f's parameters mean_n grad f(x^n): unbiased too; the
  logits' estimate and the forward value are those of the default (same key)."""
  distribution = PROBLEMS[problem][0]
  est = estimators.get("indecater", distribution=distribution, num_samples=2, pathwise="samples")
  samples, exact = sample_gradients(est, problem, 2000)
  assert_mean_matches(samples, exact, problem)
  _, logits, params, f = make_problem(problem)
  default = estimators.get("indecater", distribution=distribution, num_samples=2)
  run = lambda e: jax.jit(lambda k: (e(k, logits, lambda b: f(b, params)),) + _grads(e, f)(
      k, logits, params))
  (v_s, g_s, _), (v_d, g_d, _) = run(est)(jax.random.key(7)), run(default)(jax.random.key(7))
  assert_f32_close(v_s, v_d, 1 + np.abs(v_d).max(), ulps=16, rtol=1e-5)
  assert_f32_close(g_s, g_d, 1 + np.abs(v_d).max(), ulps=16, rtol=1e-5)


@pytest.mark.parametrize("call, exc, words", [
    (lambda: estimators.get("indecater", num_samples=0), ValueError, ["num_samples", ">= 1", "0"]),
    (lambda: estimators.get("indecater", num_samples=2.0), TypeError,
     ["num_samples", "int", "float"]),
    (lambda: estimators.get("indecater", num_samples=True), TypeError, ["num_samples", "bool"]),
    (lambda: estimators.get("indecater", max_evaluations=0), ValueError,
     ["max_evaluations", ">= 1", "0"]),
    (lambda: estimators.get("indecater", samples=2), TypeError, ["samples", "num_samples"]),
    (lambda: estimators.get("indecater", pathwise="mean"), ValueError,
     ["pathwise", "rao_blackwell", "samples", "mean"]),
    (lambda: estimators.get("indecater", distribution="gaussian"), ValueError, ["gaussian"]),
    (lambda: estimators.get("indecater")(jax.random.key(0), jnp.zeros((2, 3, 4)), lambda b: b),
     ValueError, ["prefix", "(2, 3, 4)"]),
    (lambda: estimators.get("indecater")(jax.random.key(0), jnp.zeros((2, 3), jnp.int32),
                                         lambda b: jnp.sum(b, axis=-1)),
     TypeError, ["logits", "int32"]),
    (lambda: estimators.get("indecater")(jax.random.key(0), jnp.zeros((2, 0, 3)),
                                         lambda b: jnp.sum(b, axis=(1, 2))),
     ValueError, ["at least one latent", "(0,)"]),
])
def test_bad_input_errors(call, exc, words):
  with pytest.raises(exc) as info:
    call()
  for word in words:
    assert word in str(info.value), (word, str(info.value))


def test_size_guard_names_the_count_and_the_cap():
  f = lambda b: jnp.sum(b, axis=(1, 2))
  logits = jnp.zeros((2, 20, 10))                   # D = 20, K = 10: 200 per sample
  est = estimators.get("indecater", num_samples=400)
  with pytest.raises(ValueError) as info:
    est(jax.random.key(0), logits, f)
  for word in ["400 * 20 * 10 = 80000", "max_evaluations=65536", "(20,)"]:
    assert word in str(info.value), (word, str(info.value))
  # At the cap it runs; one under it refuses.
  small = jnp.zeros((2, 5, 4))                      # D = 5, K = 4
  assert estimators.get("indecater", num_samples=2, max_evaluations=40)(
      jax.random.key(0), small, f).shape == (2,)
  with pytest.raises(ValueError, match="max_evaluations=39"):
    estimators.get("indecater", num_samples=2, max_evaluations=39)(jax.random.key(0), small, f)
  # Bernoulli counts K = 2.
  with pytest.raises(ValueError, match=r"1 \* 30 \* 2 = 60"):
    estimators.get("indecater", distribution="bernoulli", max_evaluations=59)(
        jax.random.key(0), jnp.zeros((2, 30)), lambda b: jnp.sum(b, axis=1))


def _total_variance(est, problem, n, seed=1):
  """Total variance of the logits' estimate over n keys, with its standard error
  (the standard error of the mean of the squared deviations)."""
  _, logits, params, f = make_problem(problem)
  g = jax.jit(jax.vmap(lambda k: jax.grad(
      lambda l: jnp.sum(est(k, l, lambda b: f(b, params))))(logits)))
  samples = np.asarray(g(jax.random.split(jax.random.key(seed), n)), np.float64).reshape(n, -1)
  squared = np.sum((samples - samples.mean(axis=0)) ** 2, axis=1) * n / (n - 1)
  return squared.mean(), squared.std(ddof=1) / np.sqrt(n)


@pytest.mark.slow
def test_lower_logits_variance_than_rloo_at_equal_evaluations():
  """cat_K3_N3_mlp: D = 3 latents with K = 3 values, so one IndeCateR sample costs
  9 evaluations of f, as many as RLOO with 9 samples. Measured over 20000 keys:
  IndeCateR's total variance for the logits is 0.185 (standard error 0.001), RLOO's
  0.636 (0.002), 3.4x; on bern_N3_mlp (6 evaluations each) 0.143 against 0.275
  (1.9x). (For the MLP's parameters RLOO's average over 9 independent samples has
  the lower variance, 0.86 against 2.80 over 4000 keys: IndeCateR's points are one
  draw and its neighbours.)
  The assertion compares the two variances 5.3 standard errors apart each, a
  false-failure rate under 1e-7 per side when IndeCateR's is lower."""
  z = 5.3
  for problem, evaluations in (("cat_K3_N3_mlp", 9), ("bern_N3_mlp", 6)):
    distribution = PROBLEMS[problem][0]
    ind, ind_se = _total_variance(estimators.get("indecater", distribution=distribution),
                                  problem, 20000)
    rloo, rloo_se = _total_variance(
        estimators.get("rloo", distribution=distribution, num_samples=evaluations), problem,
        20000)
    assert ind + z * ind_se < rloo - z * rloo_se, (problem, ind, ind_se, rloo, rloo_se)
