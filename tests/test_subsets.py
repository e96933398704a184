"""relaxed_top_k: Xie & Ermon's successive-softmax relaxation of a k-subset.

The hard set is checked against gumbel_top_k (same key) and, statistically, against
the exact Plackett-Luce inclusion probabilities; the soft sample against a float64
NumPy implementation of the recursion on the same Gumbel scores; values and
gradients against finite differences, gumbel_softmax (k = 1) and the finiteness
rules of the other samplers.
"""

import contextlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import gumbax
from _tolerance import EPS32, f32_tol

DTYPES = ["float16", "bfloat16", "float32", "float64"]
# float32 by default; the other dtypes (each a few compilations) run with -m slow.
DTYPE_PARAMS = [d if d == "float32" else pytest.param(d, marks=pytest.mark.slow) for d in DTYPES]
ALPHA = 1e-6  # false-failure rate of each statistical test (Bonferroni-split)


def _x64(dtype):
  return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


def _k_hot(index, num_classes, axis):
  """k-hot of gumbel_top_k's indices (k on ``axis``) with categories on ``axis``."""
  one_hot = jax.nn.one_hot(jnp.moveaxis(index, axis, -1), num_classes)  # (..., k, n)
  return jnp.moveaxis(jnp.sum(one_hot, axis=-2), -1, axis)


# Jitted once per (k, hard, axis) and shape, so tests do not pay eager dispatch.
_rtk = jax.jit(gumbax.relaxed_top_k, static_argnums=2, static_argnames=("hard", "axis"))


# -- the hard set is gumbel_top_k's ----------------------------------------------


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("shape,k,axis", [((4, 6), 2, -1), ((3, 8, 2), 5, 1)])
def test_hard_is_gumbel_top_k_set(dtype, shape, k, axis):
  with _x64(dtype):
    logits = jax.random.normal(jax.random.key(1), shape, jnp.float32).astype(dtype) * 2
    # mask one category of the first row (its row keeps >= k unmasked ones)
    first = (0,) * len(shape)
    logits = logits.at[first].set(-jnp.inf)
    keys = jax.random.split(jax.random.key(2), 50)
    hard = jax.jit(jax.vmap(lambda key: gumbax.relaxed_top_k(key, logits, k, 0.3, hard=True,
                                                             axis=axis)))(keys)
    index = jax.jit(jax.vmap(lambda key: gumbax.gumbel_top_k(key, logits, k, axis=axis)))(keys)
    assert hard.dtype == logits.dtype and hard.shape == (50,) + shape
    expected = jax.vmap(lambda i: _k_hot(i, shape[axis], axis))(index)
    np.testing.assert_array_equal(np.asarray(hard, np.float64), np.asarray(expected, np.float64))
    assert np.all(np.asarray(hard[(slice(None),) + first], np.float64) == 0)  # masked


# -- statistics: inclusion frequencies ------------------------------------------


def _inclusion_probs(probs, k):
  """Exact P(i in the set) of k draws without replacement (enumerating ordered tuples)."""
  probs = np.asarray(probs, np.float64)
  incl = np.zeros(probs.size)
  for tup in itertools.permutations(range(probs.size), k):
    p, left = 1.0, 1.0
    for i in tup:
      p *= probs[i] / left
      left -= probs[i]
    incl[list(tup)] += p
  return incl


@pytest.mark.parametrize("k,masked", [(2, ()), (3, (1,))])
def test_hard_inclusion_frequencies_match_plackett_luce(k, masked):
  """Each category's inclusion count is Binomial(n, pi_i) with pi_i the exact
  without-replacement inclusion probability; two-sided exact binomial test per
  unmasked category at ALPHA / (number of categories) (Bonferroni), so the test
  fails with probability at most ALPHA = 1e-6 for a correct sampler. With n = 20000
  it detects inclusion errors of about 0.02."""
  n = 20_000
  logits = np.array([1.0, 0.2, -0.5, 0.7, -1.2, 0.0], np.float32)
  logits[list(masked)] = -np.inf
  keys = jax.random.split(jax.random.key(7), n)
  hard = jax.jit(jax.vmap(lambda key: gumbax.relaxed_top_k(key, logits, k, 0.5, hard=True)))(keys)
  hard = np.asarray(hard)
  assert np.all((hard == 0) | (hard == 1)) and np.all(hard.sum(axis=-1) == k)
  counts = hard.sum(axis=0)
  probs = np.exp(logits.astype(np.float64) - logits.max())
  incl = _inclusion_probs(probs / probs.sum(), k)
  np.testing.assert_allclose(incl.sum(), k, rtol=1e-12)
  alpha = ALPHA / logits.size
  for i in range(logits.size):
    if incl[i] == 0:
      assert counts[i] == 0, f"masked category {i} was selected"
      continue
    p = stats.binomtest(int(counts[i]), n, incl[i]).pvalue
    assert p >= alpha, (i, counts[i] / n, incl[i], p)


def test_inclusion_test_rejects_with_replacement():
  """Power control: the binomial test above rejects the inclusion law of k i.i.d.
  draws *with* replacement (1 - (1 - p_i)^k), which a sampler that forgot to remove
  chosen categories would approximate."""
  n, k = 20_000, 2
  logits = np.array([1.0, 0.2, -0.5, 0.7, -1.2, 0.0], np.float32)
  keys = jax.random.split(jax.random.key(7), n)
  counts = np.asarray(jax.jit(jax.vmap(
      lambda key: gumbax.relaxed_top_k(key, logits, k, 0.5, hard=True)))(keys)).sum(axis=0)
  probs = np.exp(logits) / np.exp(logits).sum()
  wrong = 1 - (1 - probs) ** k
  pvalues = [stats.binomtest(int(c), n, w).pvalue for c, w in zip(counts, wrong)]
  assert min(pvalues) < ALPHA / logits.size


# -- the soft sample ----------------------------------------------------------------


def _reference(scores, k, tau):
  """Xie & Ermon's recursion in float64 NumPy: alpha += log(1 - p); p = softmax(alpha/t).
  (log1p written out in float64; exact enough away from the hard limit.)"""
  alpha = np.asarray(scores, np.float64)
  total = np.zeros_like(alpha)
  for _ in range(k):
    z = alpha / tau
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    total += p
    with np.errstate(divide="ignore"):
      alpha = alpha + np.log1p(-p)
  return total


def test_perturbation_is_gumbel_noise_of_the_same_key():
  """gumbax.gumbel(key, shape) is the noise relaxed_top_k adds (so the reference below
  uses the same scores): at a tiny temperature the soft sample is the k-hot of the
  top k of logits + gumbel(key, shape)."""
  key = jax.random.key(5)
  logits = jax.random.normal(jax.random.key(6), (4, 9))
  scores = np.asarray(logits + gumbax.gumbel(key, logits.shape))
  top = np.argsort(-scores, axis=-1)[:, :3]
  expected = np.zeros(scores.shape)
  np.put_along_axis(expected, top, 1.0, axis=-1)
  np.testing.assert_array_equal(np.asarray(_rtk(key, logits, 3, 1e-4)), expected)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0, 5.0])
def test_soft_matches_float64_reference(tau):
  key = jax.random.key(9)
  logits = jax.random.normal(jax.random.key(10), (6, 12)) * 2
  k = 4
  y = gumbax.relaxed_top_k(key, logits, k, tau)
  scores = np.asarray(logits, np.float64) + np.asarray(gumbax.gumbel(key, logits.shape), np.float64)
  ref = _reference(scores, k, tau)
  # Each p is a softmax of scores of magnitude |scores| / tau, summed k times.
  atol = f32_tol(np.abs(scores).max() / tau, ulps=16 * k)
  np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=atol)
  np.testing.assert_allclose(np.asarray(y).sum(axis=-1), k, rtol=0, atol=16 * k * EPS32 * k)


def test_k1_is_gumbel_softmax_with_its_gradient():
  """With k = 1 the relaxation is a Gumbel-softmax sample: same values and gradients
  (logits and a per-row temperature) for the same key."""
  key = jax.random.key(11)
  logits = jax.random.normal(jax.random.key(12), (5, 7)).at[1, 2].set(-jnp.inf)
  tau = jnp.array([0.3, 1.0, 2.0, 0.05, 0.7])
  w = jax.random.normal(jax.random.key(13), logits.shape)
  top1 = lambda l, t: jnp.sum(gumbax.relaxed_top_k(key, l, 1, t) * w)
  gs = lambda l, t: jnp.sum(gumbax.gumbel_softmax(key, l, t) * w)
  np.testing.assert_allclose(_rtk(key, logits, 1, tau),
                             jax.jit(gumbax.gumbel_softmax)(key, logits, tau), rtol=1e-5, atol=1e-6)
  g1 = jax.jit(jax.grad(top1, (0, 1)))(logits, tau)
  g2 = jax.jit(jax.grad(gs, (0, 1)))(logits, tau)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=f32_tol(np.abs(b).max() + 1, 64))


def test_gradient_matches_finite_differences_float64():
  """Logits' and temperature's gradients of the k-step recursion agree with central
  differences in float64 (error O(h^2) ~ 1e-10; tolerance 1e-6)."""
  with jax.enable_x64(True):
    key = jax.random.key(14)
    logits = jax.random.normal(jax.random.key(15), (3, 6), jnp.float64)
    logits = logits.at[2, 1].set(-jnp.inf)
    tau = jnp.array([0.5, 0.2, 2.0], jnp.float64)
    w = jax.random.normal(jax.random.key(16), logits.shape, jnp.float64)
    f = lambda l, t: jnp.sum(gumbax.relaxed_top_k(key, l, 3, t) * w)
    gl, gt = jax.jit(jax.grad(f, (0, 1)))(logits, tau)
    h = 1e-6
    f = jax.jit(f)
    for i, j in itertools.product(range(3), range(6)):
      if i == 2 and j == 1:
        assert gl[i, j] == 0
        continue
      fd = (f(logits.at[i, j].add(h), tau) - f(logits.at[i, j].add(-h), tau)) / (2 * h)
      np.testing.assert_allclose(gl[i, j], fd, rtol=1e-6, atol=1e-6)
    for i in range(3):
      fd = (f(logits, tau.at[i].add(h)) - f(logits, tau.at[i].add(-h))) / (2 * h)
      np.testing.assert_allclose(gt[i], fd, rtol=1e-6, atol=1e-6)


def test_low_temperature_reaches_the_hard_set():
  """At tau = 1e-4 the soft sample is (to float32 rounding) the hard set, also with
  near-ties and large gaps where log(1 - p) in linear space would round to log(0)."""
  logits = jnp.array([[0.0, 1e-3, -1e-3, 2.0, 5.0],
                      [30.0, -30.0, 15.0, -15.0, 0.0],
                      [100.0, 99.0, 98.0, -100.0, 0.0]])
  for seed in range(10):
    key = jax.random.key(seed)
    soft = _rtk(key, logits, 3, 1e-4)
    hard = _rtk(key, logits, 3, 1e-4, hard=True)
    np.testing.assert_allclose(soft, hard, atol=1e-4)
    assert np.all(np.asarray(soft) <= 1 + 1e-6)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_finite_values_and_gradients_at_extremes(dtype):
  with _x64(dtype):
    big = float(jnp.finfo(dtype).max)
    rows = jnp.asarray([
        [1e4, -1e4, 0.0, 1.0, 2.0],
        [-1e4, -1e4, 1e4, 1e4, 0.0],
        [0.0, 1e-3, -1e-3, 1e-3, 0.0],             # near-ties and an exact tie
        [0.0, -jnp.inf, 1.0, -jnp.inf, 2.0],       # masked
        [big, -jnp.inf, -big, 0.0, 1.0],           # extremes with a mask
        [3.0, 3.0, 3.0, 3.0, 3.0],
    ], dtype)
    masked = np.asarray(jnp.isneginf(rows))
    w = jax.random.normal(jax.random.key(3), rows.shape, jnp.float32)

    @jax.jit(static_argnums=3)
    def run(key, l, t, hard):
      def loss(l, t):
        return jnp.sum(gumbax.relaxed_top_k(key, l, 3, t, hard=hard).astype(jnp.float32) * w)
      return gumbax.relaxed_top_k(key, l, 3, t, hard=hard), jax.grad(loss, (0, 1))(l, t)

    # a learnable per-row temperature, from 1e-4 to 100
    tau = jnp.asarray([1e-4, 0.01, 1.0, 100.0, 0.3, 1e-4], dtype)
    for hard, seed in itertools.product((False, True), range(2)):
        out, (gl, gt) = run(jax.random.key(seed), rows, tau, hard)
        out32, gl32, gt32 = (np.asarray(a, np.float64) for a in (out, gl, gt))
        assert out.dtype == rows.dtype and gl.dtype == rows.dtype
        assert np.all(np.isfinite(out32)) and np.all(np.isfinite(gl32))
        assert np.all(np.isfinite(gt32)), (hard, gt32)
        assert np.all(out32[masked] == 0) and np.all(gl32[masked] == 0)
        tol = 0.05 if dtype in ("float16", "bfloat16") else 1e-4
        np.testing.assert_allclose(out32.sum(axis=-1), 3.0, atol=tol)


# -- transformations and bad input ---------------------------------------------------


def test_jit_vmap_over_keys_and_logits():
  logits = jax.random.normal(jax.random.key(0), (4, 10))
  keys = jax.random.split(jax.random.key(1), 4)
  f = lambda key, l: _rtk(key, l, 3, 0.5)
  eager = jnp.stack([f(kk, l) for kk, l in zip(keys, logits)])
  np.testing.assert_allclose(jax.jit(jax.vmap(f))(keys, logits), eager, rtol=1e-5,
                             atol=f32_tol(3.0, 64))
  # over keys only, and over logits only
  np.testing.assert_allclose(jax.vmap(f, (0, None))(keys, logits[0]),
                             jnp.stack([f(kk, logits[0]) for kk in keys]), rtol=1e-5,
                             atol=f32_tol(3.0, 64))
  np.testing.assert_allclose(jax.vmap(f, (None, 0))(keys[0], logits),
                             jnp.stack([f(keys[0], l) for l in logits]), rtol=1e-5,
                             atol=f32_tol(3.0, 64))
  np.testing.assert_array_equal(jax.jit(f)(keys[0], logits), jax.jit(f)(keys[0], logits))


def test_hard_gradient_is_the_soft_gradient():
  key, logits = jax.random.key(2), jax.random.normal(jax.random.key(3), (3, 8))
  w = jax.random.normal(jax.random.key(4), logits.shape)
  grad = lambda hard: jax.jit(jax.grad(lambda l: jnp.sum(
      gumbax.relaxed_top_k(key, l, 3, 0.5, hard=hard) * w)))(logits)
  np.testing.assert_array_equal(grad(True), grad(False))


def test_bad_input():
  key, logits = jax.random.key(0), jnp.zeros((2, 5))
  with pytest.raises(ValueError, match="`k`"):
    gumbax.relaxed_top_k(key, logits, 0, 1.0)
  with pytest.raises(ValueError, match="`k`=6"):
    gumbax.relaxed_top_k(key, logits, 6, 1.0)
  for bad_k in (2.0, True, "2", None):
    with pytest.raises(TypeError, match="`k`"):
      gumbax.relaxed_top_k(key, logits, bad_k, 1.0)
  masked = logits.at[1, :3].set(-jnp.inf)
  with pytest.raises(ValueError, match="unmasked"):
    gumbax.relaxed_top_k(key, masked, 3, 1.0)
  with pytest.raises(ValueError, match="-inf"):
    gumbax.relaxed_top_k(key, logits.at[0].set(-jnp.inf), 1, 1.0)
  with pytest.raises(ValueError, match="NaN"):
    gumbax.relaxed_top_k(key, logits.at[0, 1].set(jnp.nan), 1, 1.0)
  for bad_tau in (0.0, -1.0, float("nan"), float("inf"), jnp.array([1.0, 0.0])):
    with pytest.raises(ValueError, match="temperature"):
      gumbax.relaxed_top_k(key, logits, 2, bad_tau)
  with pytest.raises(TypeError, match="`hard`"):
    gumbax.relaxed_top_k(key, logits, 2, 1.0, hard=1)
  with pytest.raises(ValueError, match="axis"):
    gumbax.relaxed_top_k(key, logits, 2, 1.0, axis=2)
  with pytest.raises(TypeError, match="floating"):
    gumbax.relaxed_top_k(key, jnp.zeros(5, jnp.int32), 2, 1.0)


def test_traced_degenerate_rows_give_nan():
  key = jax.random.key(0)
  logits = jnp.zeros((3, 4)).at[0].set(-jnp.inf).at[1, 2].set(jnp.nan)
  for hard in (False, True):
    out = jax.jit(lambda l: gumbax.relaxed_top_k(key, l, 2, 0.5, hard=hard))(logits)
    assert np.all(np.isnan(np.asarray(out[:2])))
    assert np.all(np.isfinite(np.asarray(out[2])))
    np.testing.assert_allclose(out[2].sum(), 2.0, rtol=1e-6)


def test_traced_temperature_below_floor_is_the_hard_set():
  key, logits = jax.random.key(3), jax.random.normal(jax.random.key(4), (2, 6))
  hard = gumbax.relaxed_top_k(key, logits, 2, 1.0, hard=True)
  run = jax.jit(lambda t: gumbax.relaxed_top_k(key, logits, 2, t))
  for tau in (0.0, -1.0):
    out = run(jnp.float32(tau))
    np.testing.assert_array_equal(out, hard)
