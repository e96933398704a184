"""Statistical tests of the samplers: each one is calibrated so that it can fail.

Every test draws a fixed-seed sample (vectorized with ``jax.vmap`` over split keys
or through a batch shape, under ``jax.jit``) and compares it with the exact law
stated in REFERENCES.md section 1, using a rejection threshold derived from a
stated false-failure rate:

* ``ALPHA = 1e-6`` is the probability that a test fails although the sampler is
  correct (per test function and parameter set). A test that runs ``m`` sub-tests
  gives each of them ``ALPHA / m`` (Bonferroni), so the whole test still fails
  with probability at most ``ALPHA``.
* Frequencies: Pearson chi-square, rejected above ``chi2.ppf(1 - alpha, df)``.
  Cells of probability zero must be empty; every other cell has an expected
  count of at least 5 (asserted), so the chi-square approximation holds.
* Continuous laws: one-sample Kolmogorov-Smirnov (``scipy.stats.kstest``) or
  two-sample KS, rejected when the p-value is below ``alpha``; laws of rounded
  (float16 / bfloat16) samples are discrete, so they are compared with the
  Dvoretzky-Kiefer-Wolfowitz bound ``sqrt(log(2 / alpha) / (2 n))``, valid for
  any distribution.
* Binomial counts: exact two-sided ``scipy.stats.binomtest``.

Layout note: XLA:CPU compiles the threefry PRNG slowly for arrays whose minor
dimension is small (about 1 s for ``(n, 2)``, 5 s for ``(n, 10)``, under 1 s for
``(10, n)``), so most large draws put the n samples on the last axis and the
categories on ``axis=0``; the default ``axis=-1`` layout is exercised at small K,
and jitted samplers are shared at module level so equal shapes compile once.

Power controls (the tests named ``*_rejects_*``) feed the same statistics a
deliberately wrong law and assert that they reject it, so a sampler with that
error could not pass. Since all seeds are fixed, every test is deterministic.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from scipy import stats

import gumbax

# False-failure rate of each test (Bonferroni-split among its sub-tests).
ALPHA = 1e-6

# Default number of draws (one split key each in vmapped tests).
N = 100_000


# --------------------------------------------------------------------------------
# Helpers: thresholds, statistics and exact laws (NumPy float64, independent of
# the library).
# --------------------------------------------------------------------------------


def chi2_threshold(df: int, alpha: float = ALPHA) -> float:
  """Rejection threshold of a chi-square statistic with ``df`` degrees of freedom."""
  return float(stats.chi2.ppf(1.0 - alpha, df))


def chi2_statistic(counts, probs) -> tuple[float, int]:
  """Pearson's statistic and its degrees of freedom over the cells with probs > 0.

  Asserts that cells of probability zero are empty and that every other cell
  expects at least 5 observations (so the chi-square law applies).
  """
  counts = np.asarray(counts, np.float64).ravel()
  probs = np.asarray(probs, np.float64).ravel()
  assert counts.shape == probs.shape
  np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-9)
  impossible = probs == 0
  assert np.all(counts[impossible] == 0), "a zero-probability outcome was sampled"
  n = counts.sum()
  expected = n * probs[~impossible]
  assert expected.min() >= 5, f"expected count {expected.min():.2f} < 5: test too weak"
  stat = float(np.sum((counts[~impossible] - expected) ** 2 / expected))
  return stat, int(np.sum(~impossible)) - 1


def assert_chi2_fits(counts, probs, alpha: float = ALPHA, what: str = "") -> None:
  stat, df = chi2_statistic(counts, probs)
  threshold = chi2_threshold(df, alpha)
  assert stat < threshold, (
      f"{what}: chi2 = {stat:.1f} >= {threshold:.1f} (df={df}, alpha={alpha:.1e}); "
      f"counts {np.asarray(counts).ravel()}, probs {np.asarray(probs).ravel()}")


def assert_ks_fits(x, cdf, alpha: float = ALPHA, what: str = "") -> None:
  """One-sample KS test of the sample ``x`` against the continuous CDF ``cdf``."""
  x = np.asarray(x, np.float64)
  assert np.all(np.isfinite(x)), f"{what}: non-finite values"
  res = stats.kstest(x, cdf)
  assert res.pvalue >= alpha, (
      f"{what}: KS D = {res.statistic:.4g}, p = {res.pvalue:.3g} < {alpha:.1e} (n={x.size})")


def ks_2samp_pvalue(x, y) -> float:
  return float(stats.ks_2samp(np.asarray(x, np.float64), np.asarray(y, np.float64),
                              method="asymp").pvalue)


def dkw_epsilon(n: int, alpha: float = ALPHA) -> float:
  """``P(sup |F_n - F| > eps) <= alpha`` for every law F (Massart's DKW bound)."""
  return float(np.sqrt(np.log(2.0 / alpha) / (2.0 * n)))


def gumbel_cdf_np(x):
  """Standard Gumbel CDF ``exp(-exp(-x))`` in float64."""
  return np.exp(-np.exp(-np.asarray(x, np.float64)))


def uniform_cdf(u):
  return np.clip(np.asarray(u, np.float64), 0.0, 1.0)


def softmax_np(logits) -> np.ndarray:
  """softmax in float64; ``-inf`` logits get probability exactly 0."""
  l = np.asarray(logits, np.float64)
  e = np.exp(l - l.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def logsumexp_np(logits) -> float:
  l = np.asarray(logits, np.float64)
  m = l.max()
  return float(m + np.log(np.sum(np.exp(l - m))))


def ordered_tuple_probs(probs, k: int) -> np.ndarray:
  """Exact law of k draws without replacement, as an array of shape ``(K,) * k``.

  ``P(i_1, ..., i_k) = prod_j p_{i_j} / (1 - p_{i_1} - ... - p_{i_{j-1}})``;
  tuples with a repeated index have probability 0.
  """
  probs = np.asarray(probs, np.float64)
  num_classes = probs.size
  table = np.zeros((num_classes,) * k)
  for tup in itertools.permutations(range(num_classes), k):
    p, left = 1.0, 1.0
    for i in tup:
      p *= probs[i] / left
      left -= probs[i]
    table[tup] = p
  return table


def keys(seed: int, n: int) -> jax.Array:
  return jax.random.split(jax.random.key(seed), n)


def vmap_sample(fn, seed: int, n: int):
  """``n`` i.i.d. draws of ``fn(key)``, one key each, jitted and vmapped."""
  return jax.jit(jax.vmap(fn))(keys(seed, n))


def columns(values, n: int, dtype=jnp.float32) -> jax.Array:
  """``values`` (length K) broadcast to ``(K, n)``: n samples on the last axis."""
  values = jnp.asarray(values, dtype)
  return jnp.broadcast_to(values[:, None], (values.shape[0], n))


def random_logits(seed: int, num_classes: int, scale: float = 1.0,
                  offset: float = 1.3) -> np.ndarray:
  """Unnormalized float32 logits; the offset catches a forgotten normalization."""
  rng = np.random.default_rng(seed)
  return (scale * rng.standard_normal(num_classes) + offset).astype(np.float32)


def category_counts(one_hot, axis: int = -1) -> np.ndarray:
  """Counts per category of one-hot samples; also checks they are one-hot."""
  y = np.asarray(one_hot.astype(jnp.float32))
  assert np.all((y == 0) | (y == 1)), "sample is not 0/1"
  assert np.all(y.sum(axis=axis) == 1), "sample is not one-hot"
  other = tuple(a for a in range(y.ndim) if a != axis % y.ndim)
  return y.sum(axis=other)


# --------------------------------------------------------------------------------
# 1. Gumbel noise.
# --------------------------------------------------------------------------------


def test_gumbel_cdf_and_log_prob_match_scipy():
  """The library's CDF and log-density agree with scipy's ``gumbel_r`` (float32).

  ``exp(-exp(-x))`` has condition number ``exp(-x) <= 55`` on [-4, 16], hence the
  CDF's relative tolerance of 55 float32 ulps.
  """
  x = np.linspace(-4.0, 16.0, 2001, dtype=np.float32)
  np.testing.assert_allclose(np.asarray(gumbax.gumbel_cdf(x)),
                             stats.gumbel_r.cdf(x.astype(np.float64)), rtol=1e-5, atol=1e-30)
  np.testing.assert_allclose(np.asarray(gumbax.gumbel_log_prob(x)),
                             stats.gumbel_r.logpdf(x.astype(np.float64)), rtol=2e-6, atol=2e-6)


def test_gumbel_float32_matches_cdf():
  """float32 Gumbel noise is standard Gumbel: KS on a batch draw and on a vmapped draw.

  Two sub-tests, each at ALPHA / 2. With n = 200k the KS test detects a CDF error
  of about 0.006 anywhere (e.g. a location shift of 0.02 or a clamped tail of
  mass 0.006); the vmapped draw (one scalar per split key) checks that split keys
  give independent, correctly distributed noise.
  """
  alpha = ALPHA / 2
  batch = jax.jit(lambda k: gumbax.gumbel(k, (200_000,)))(jax.random.key(0))
  assert batch.dtype == jnp.float32 and batch.shape == (200_000,)
  assert_ks_fits(batch, gumbel_cdf_np, alpha, "batch draw")
  scalars = vmap_sample(lambda k: gumbax.gumbel(k, ()), 1, N)
  assert scalars.shape == (N,)
  assert_ks_fits(scalars, gumbel_cdf_np, alpha, "vmapped scalar draws")


def _rounded_gumbel_law(dtype):
  """Exact CDF of ``round_to_nearest_dtype(G)``, G standard Gumbel, at every atom.

  Returns the finite values of ``dtype`` (sorted, as float64) and the probability
  that the rounded sample is at most each of them: ``F(midpoint to the next
  value)``. Valid for a sample rounded once from continuous noise (from float32
  noise up to a negligible ~2**-23 of discreteness).
  """
  bits = np.arange(2 ** 16, dtype=np.uint16)
  exponent = np.uint16(0x7C00 if dtype == np.float16 else 0x7F80)
  finite = bits[(bits & exponent) != exponent]  # all-ones exponent: inf and NaN
  atoms = np.unique(finite.view(dtype).astype(np.float64))
  # Gumbel noise lies in [-5, 17]: beyond +-64 both CDFs are exactly 0 or 1 (a
  # sample out there would still show up at the extreme atoms kept).
  atoms = atoms[np.abs(atoms) <= 64]
  upper = np.append((atoms[1:] + atoms[:-1]) / 2, np.inf)
  return atoms, gumbel_cdf_np(upper)


# Tail thresholds just outside the range a sampler clamping u in the output dtype
# would reach (REFERENCES.md 1: about [-1.9, 6.9] in float16, [-1.6, 4.9] in bfloat16).
_LOW_PRECISION_TAILS = {"float16": (-2.0, 7.0), "bfloat16": (-1.75, 5.0)}


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_gumbel_low_precision_is_rounded_float32_noise(dtype_name):
  """float16 / bfloat16 noise is float32 noise cast once: finite, exact law, full tails.

  * equal to the float32 draw of the same key, cast (the documented contract);
  * DKW test of the whole CDF against the exact law of a rounded Gumbel;
  * binomial tests of both tails beyond the range a naive sampler (uniform noise
    clamped in the output dtype) would reach.
  Three sub-tests, each at ALPHA / 3.
  """
  dtype = jnp.dtype(dtype_name)
  np_dtype = np.float16 if dtype_name == "float16" else ml_dtypes.bfloat16
  n, alpha = 200_000, ALPHA / 3
  g, g32 = jax.jit(lambda k: (gumbax.gumbel(k, (n,), dtype), gumbax.gumbel(k, (n,))))(
      jax.random.key(2))
  assert g.dtype == dtype and g.shape == (n,)
  x = np.asarray(g.astype(jnp.float32)).astype(np.float64)
  assert np.all(np.isfinite(x))
  np.testing.assert_array_equal(np.asarray(g), np.asarray(g32.astype(dtype)))

  atoms, cdf = _rounded_gumbel_law(np_dtype)
  ecdf = np.searchsorted(np.sort(x), atoms, side="right") / n
  distance = np.max(np.abs(ecdf - cdf))
  assert distance < dkw_epsilon(n, alpha), (distance, dkw_epsilon(n, alpha))

  lo, hi = _LOW_PRECISION_TAILS[dtype_name]
  p_lo = cdf[np.searchsorted(atoms, lo)]        # P(rounded <= lo)
  p_hi = 1.0 - cdf[np.searchsorted(atoms, hi)]  # P(rounded > hi)
  for count, p, what in [(np.sum(x <= lo), p_lo, "lower"), (np.sum(x > hi), p_hi, "upper")]:
    pvalue = stats.binomtest(int(count), n, p).pvalue
    assert pvalue >= alpha, f"{what} tail: {count} of {n}, expected {n * p:.1f}"


# --------------------------------------------------------------------------------
# 2. The maximum of perturbed logits.
# --------------------------------------------------------------------------------


def test_max_of_perturbed_logits_is_gumbel_at_logsumexp_independent_of_argmax():
  """``max(l + g) - logsumexp(l)`` is standard Gumbel, and so within each argmax.

  The maximum's law conditional on each argmax value being the same standard
  Gumbel is its independence from the argmax. K + 1 KS sub-tests (pooled, then
  per argmax category), each at ALPHA / (K + 1).
  """
  num_classes, n = 5, 200_000
  logits = random_logits(10, num_classes)
  g = jax.jit(lambda k: gumbax.gumbel(k, (num_classes, n)))(jax.random.key(11))
  scores = logits.astype(np.float64) + np.asarray(g, np.float64).T
  top = scores.max(axis=1) - logsumexp_np(logits)
  index = scores.argmax(axis=1)
  alpha = ALPHA / (num_classes + 1)
  assert_ks_fits(top, gumbel_cdf_np, alpha, "max - logsumexp")
  for b in range(num_classes):
    assert_ks_fits(top[index == b], gumbel_cdf_np, alpha, f"max given argmax = {b}")


# --------------------------------------------------------------------------------
# 3. Gumbel-max.
# --------------------------------------------------------------------------------

# Jitted samplers shared by several tests (equal shapes and dtypes compile once).
_gumbel_max_vmapped = jax.jit(jax.vmap(gumbax.gumbel_max, in_axes=(0, None)))
_gumbel_max_axis0 = jax.jit(functools.partial(gumbax.gumbel_max, axis=0))


@pytest.mark.parametrize("num_classes,seed", [(2, 20), (5, 21)])
def test_gumbel_max_frequencies_equal_softmax(num_classes, seed):
  """Default layout (categories last), vmapped over N keys: frequencies fit softmax."""
  logits = random_logits(seed, num_classes)
  y = _gumbel_max_vmapped(keys(seed, N), jnp.asarray(logits))
  assert y.dtype == jnp.float32 and y.shape == (N, num_classes)
  assert_chi2_fits(category_counts(y), softmax_np(logits), what=f"K={num_classes}")


def _axis0_logits() -> np.ndarray:
  """Three columns of K = 10 logits: plain, with two masked categories, wider spread."""
  logits = np.stack([random_logits(22, 10), random_logits(23, 10),
                     random_logits(24, 10, scale=1.5)], axis=1)
  logits[[1, 4], 1] = -np.inf
  return logits


def test_gumbel_max_axis0_columns_and_masks():
  """``axis=0`` on logits of shape ``(K, R, n)``, K = 10, R = 3 different columns.

  One batch draw (one key). Each column's frequencies fit its own softmax (a wrong
  axis or mixed-up columns would not); ``-inf`` logits are never sampled, and the
  chi-square runs over the unmasked categories (``chi2_statistic`` asserts the
  masked cells are empty). R sub-tests, each at ALPHA / R.
  """
  logits = _axis0_logits()
  num_classes, num_cols = logits.shape
  batch = jnp.broadcast_to(jnp.asarray(logits)[:, :, None], (num_classes, num_cols, N))
  y = np.asarray(_gumbel_max_axis0(jax.random.key(22), batch))
  assert y.shape == (num_classes, num_cols, N)
  assert np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=0) == 1)
  counts = y.sum(axis=2)
  assert np.all(counts[[1, 4], 1] == 0), "a masked category was sampled"
  for j in range(num_cols):
    assert_chi2_fits(counts[:, j], softmax_np(logits[:, j]), ALPHA / num_cols, f"column {j}")


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_gumbel_max_low_precision_logits(dtype_name):
  """float16 / bfloat16 logits (one masked): frequencies fit softmax of the rounded logits.

  The noise is float32, so the law is exact for the rounded logits.
  """
  dtype = jnp.dtype(dtype_name)
  logits = np.append(random_logits(25, 5, scale=1.5), -np.inf)
  y = _gumbel_max_axis0(jax.random.key(25), columns(logits, N, dtype))
  assert y.dtype == dtype
  rounded = np.asarray(jnp.asarray(logits, dtype).astype(jnp.float32))
  assert_chi2_fits(category_counts(y, axis=0), softmax_np(rounded), what=dtype_name)


def test_gumbel_max_chi_square_rejects_wrong_probabilities():
  """Power control: the same chi-square rejects laws that are slightly off.

  The sample of ``test_gumbel_max_frequencies_equal_softmax`` (K = 5) is tested
  against softmax of the logits with one logit shifted by 0.1, and against
  softmax(logits / 1.1) (a temperature bug); both must be rejected at ALPHA.
  """
  num_classes, seed = 5, 21
  logits = random_logits(seed, num_classes)
  counts = category_counts(_gumbel_max_vmapped(keys(seed, N), jnp.asarray(logits)))
  shifted = logits.astype(np.float64).copy()
  shifted[0] += 0.1
  for wrong in (shifted, logits / 1.1):
    stat, df = chi2_statistic(counts, softmax_np(wrong))
    assert stat > chi2_threshold(df), (stat, chi2_threshold(df))


# --------------------------------------------------------------------------------
# 4. Gumbel-top-k.
# --------------------------------------------------------------------------------

_top_k = jax.jit(gumbax.gumbel_top_k, static_argnums=2, static_argnames="axis")


def _tuple_counts(index: np.ndarray, num_classes: int) -> np.ndarray:
  """Counts of ordered tuples (rows of ``index``), as an array of shape (K,) * k."""
  k = index.shape[1]
  code = np.ravel_multi_index(tuple(index.T), (num_classes,) * k)
  return np.bincount(code, minlength=num_classes ** k).reshape((num_classes,) * k)


def _top_k_draw(num_classes: int, k: int, masked=(), axis: int = -1):
  """Logits and an ``(n, k)`` array of ``gumbel_top_k`` indices (batch draw, one key)."""
  n = 2 * N
  logits = random_logits(30 + num_classes + k, num_classes)
  logits[list(masked)] = -np.inf
  batch = columns(logits, n)
  if axis == -1:
    batch = batch.T
  index = _top_k(jax.random.key(30), batch, k, axis=axis)
  assert index.dtype == jnp.int32
  assert index.shape == ((n, k) if axis == -1 else (k, n))
  index = np.asarray(index)
  return logits, index if axis == -1 else index.T


@pytest.mark.parametrize("num_classes,k,masked,axis", [
    (4, 2, (), 0),     # transposed layout
    (5, 3, (), -1),
    (5, 3, (2,), 0),   # a masked category
])
def test_gumbel_top_k_ordered_tuples_match_exact_law(num_classes, k, masked, axis):
  """Ordered k-tuples from ``gumbel_top_k`` fit the exact without-replacement law.

  The law of every ordered tuple is enumerated (sequential renormalization); the
  chi-square over all K!/(K-k)! tuples tests the set *and* the order in which the
  indices are returned. Indices are distinct and in range, masked ones never
  appear (k does not exceed the number of unmasked categories).
  """
  logits, index = _top_k_draw(num_classes, k, masked, axis)
  assert np.all((index >= 0) & (index < num_classes))
  ordered = np.sort(index, axis=1)
  assert np.all(ordered[:, 1:] != ordered[:, :-1]), "repeated index"
  assert not np.isin(index, masked).any(), "a masked category was sampled"
  assert_chi2_fits(_tuple_counts(index, num_classes),
                   ordered_tuple_probs(softmax_np(logits), k), what=f"K={num_classes} k={k}")


def test_gumbel_top_k_chi_square_rejects_wrong_order():
  """Power control: the tuple chi-square sees the order, not only the set.

  The sampled tuples of the (K=5, k=3) case with their order reversed must be
  rejected.
  """
  num_classes, k = 5, 3
  logits, index = _top_k_draw(num_classes, k)
  stat, df = chi2_statistic(_tuple_counts(index[:, ::-1], num_classes),
                            ordered_tuple_probs(softmax_np(logits), k))
  assert stat > chi2_threshold(df), (stat, chi2_threshold(df))


# --------------------------------------------------------------------------------
# 5. Conditional Gumbels.
# --------------------------------------------------------------------------------

_conditional_gumbel_axis0 = jax.jit(functools.partial(gumbax.conditional_gumbel, axis=0))

# Unnormalized logits; the second case has a masked category and a very unlikely
# one (conditioning on it is the numerically hard case).
_COND_LOGITS = {
    "dense": np.array([0.5, 2.0, -1.0, 1.3], np.float32),
    "masked": np.array([1.0, -np.inf, 0.2, -5.0, 2.5], np.float32),
}


def _truncated_gumbel_pit(z_i, z_b, loc_i: float) -> np.ndarray:
  """``F(z_i - l_i) / F(z_b - l_i)``: uniform if ``z_i ~ Gumbel(l_i)`` truncated below z_b."""
  z_i, z_b = np.asarray(z_i, np.float64), np.asarray(z_b, np.float64)
  return np.exp(-np.exp(loc_i - z_i) + np.exp(loc_i - z_b))


def _conditional_gumbel_pvalues(z: np.ndarray, logits: np.ndarray, b: int) -> dict[str, float]:
  """KS p-values of the law of ``z`` (shape (n, K)) given argmax b.

  * ``z_b - logsumexp(logits)`` against the standard Gumbel;
  * for unmasked ``i != b``, the probability-integral transform of ``z_i`` given
    ``z_b`` (a Gumbel with location ``l_i`` truncated to ``(-inf, z_b)``) against
    U(0, 1). Since the transform is uniform given every ``z_b``, pooling over the
    ``z_b`` values is exact.
  """
  lse = logsumexp_np(logits)
  pvalues = {"top": stats.kstest(z[:, b] - lse, gumbel_cdf_np).pvalue}
  for i in np.flatnonzero(np.isfinite(logits)):
    if i != b:
      u = _truncated_gumbel_pit(z[:, i], z[:, b], float(logits[i]))
      pvalues[f"pit {i}"] = stats.kstest(u, uniform_cdf).pvalue
  return pvalues


def _num_conditional_subtests(logits: np.ndarray) -> int:
  m = int(np.sum(np.isfinite(logits)))
  return m * m  # per unmasked b: one top test and m - 1 PIT tests


def _conditional_draw(seed: int, logits: np.ndarray, b: int, n: int = N) -> np.ndarray:
  """``conditional_gumbel`` given argmax b for n samples, returned as (n, K) float64."""
  sample = jax.nn.one_hot(jnp.full((n,), b), logits.size, axis=0)
  z = _conditional_gumbel_axis0(jax.random.key(seed), columns(logits, n), sample)
  assert z.dtype == jnp.float32 and z.shape == (logits.size, n)
  return np.asarray(z, np.float64).T


@pytest.mark.parametrize("case", sorted(_COND_LOGITS))
def test_conditional_gumbel_law_given_each_argmax(case):
  """``conditional_gumbel`` given a fixed argmax b, for every unmasked b:

  (a) ``argmax(z) == b`` always; masked coordinates are ``-inf``, the rest finite;
  (b) the top ``z_b - logsumexp(logits)`` is standard Gumbel (KS);
  (c) every other ``z_i`` is Gumbel(l_i) truncated below ``z_b`` (PIT + KS).
  m**2 sub-tests for m unmasked categories, each at ALPHA / m**2.
  """
  logits = _COND_LOGITS[case]
  alpha = ALPHA / _num_conditional_subtests(logits)
  masked = ~np.isfinite(logits)
  for b in np.flatnonzero(~masked):
    z = _conditional_draw(40 + int(b), logits, int(b))
    assert np.all(z.argmax(axis=1) == b), f"argmax != {b}"
    assert np.all(np.isneginf(z[:, masked])) and np.all(np.isfinite(z[:, ~masked]))
    for name, pvalue in _conditional_gumbel_pvalues(z, logits, int(b)).items():
      assert pvalue >= alpha, f"b={b} {name}: p = {pvalue:.3g}"


def _conditional_gumbel_unnormalized(logits: np.ndarray, b: int, g: np.ndarray) -> np.ndarray:
  """A plausible bug: right top ``logsumexp - log E_b``, but the others truncated
  below ``-log E_b`` (the REFERENCES formula with unnormalized logits). E = exp(-g)."""
  e = np.exp(-g)
  z = -np.log(e / np.exp(logits.astype(np.float64)) + e[:, b:b + 1])
  z[:, b] = logsumexp_np(logits) - np.log(e[:, b])
  return z


def test_conditional_gumbel_statistics_reject_wrong_conditionals():
  """Power control: two wrong conditional laws fail the tests above, for every b.

  * the unconditional ``z = logits + g`` (b is not its argmax);
  * ``_conditional_gumbel_unnormalized``, whose top coordinate is right and whose
    argmax is b, so only the PIT tests of the other coordinates can catch it.
  At least one of the same KS statistics must reject at the same
  Bonferroni-corrected level.
  """
  logits = _COND_LOGITS["dense"]
  alpha = ALPHA / _num_conditional_subtests(logits)
  g = np.asarray(gumbax.gumbel(jax.random.key(41), (logits.size, N)), np.float64).T
  for b in range(logits.size):
    for what, z in [("unconditional", logits.astype(np.float64) + g),
                    ("unnormalized", _conditional_gumbel_unnormalized(logits, b, g))]:
      pvalues = _conditional_gumbel_pvalues(z, logits, b)
      assert min(pvalues.values()) < alpha, (what, b, pvalues)


def _joint_law_pvalues(z: np.ndarray, z_ref: np.ndarray, logits: np.ndarray) -> list[float]:
  """Two-sample KS p-values on each unmasked coordinate and each difference to the first."""
  live = np.flatnonzero(np.isfinite(logits))
  pvalues = [ks_2samp_pvalue(z[:, i], z_ref[:, i]) for i in live]
  pvalues += [ks_2samp_pvalue(z[:, i] - z[:, live[0]], z_ref[:, i] - z_ref[:, live[0]])
              for i in live[1:]]
  return pvalues


def _joint_draws(logits: np.ndarray, sample_logits: np.ndarray):
  """``b ~ gumbel_max(sample_logits)``, then ``z ~ conditional_gumbel(logits, b)``;
  and an independent unconditional ``z_ref = logits + g``. Both (N, K) float64."""
  k1, k2, k3 = jax.random.split(jax.random.key(50), 3)
  b = _gumbel_max_axis0(k1, columns(sample_logits, N))
  z = _conditional_gumbel_axis0(k2, columns(logits, N), b)
  assert np.all(np.argmax(np.asarray(z), axis=0) == np.argmax(np.asarray(b), axis=0))
  g = gumbax.gumbel(k3, (logits.size, N))
  z_ref = logits.astype(np.float64)[:, None] + np.asarray(g, np.float64)
  return np.asarray(z, np.float64).T, z_ref.T


@pytest.mark.parametrize("case", sorted(_COND_LOGITS))
def test_conditional_gumbel_joint_law_equals_unconditional(case):
  """``b ~ gumbel_max``, then ``z ~ conditional_gumbel(., b)`` has the law of ``logits + g``.

  Two-sample KS tests against an independent unconditional sample on each
  unmasked coordinate and on each difference ``z_i - z_first``, Bonferroni-split.
  """
  logits = _COND_LOGITS[case]
  z, z_ref = _joint_draws(logits, logits)
  assert np.all(np.isneginf(z[:, ~np.isfinite(logits)]))
  pvalues = _joint_law_pvalues(z, z_ref, logits)
  assert min(pvalues) >= ALPHA / len(pvalues), pvalues


def test_conditional_gumbel_joint_law_rejects_wrong_sample_law():
  """Power control: b drawn with one logit shifted by 0.25 gives a rejected joint law."""
  logits = _COND_LOGITS["dense"]
  shifted = logits.copy()
  shifted[0] += 0.25
  z, z_ref = _joint_draws(logits, shifted)
  pvalues = _joint_law_pvalues(z, z_ref, logits)
  assert min(pvalues) < ALPHA / len(pvalues), pvalues


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_conditional_gumbel_argmax_low_precision(dtype_name):
  """The documented ``argmax(z, axis) == argmax(sample, axis)`` for float16/bfloat16."""
  dtype = jnp.dtype(dtype_name)
  logits = _COND_LOGITS["dense"]
  b = logits.size - 1                   # ties resolve to lower indices, away from b
  sample = jax.nn.one_hot(jnp.full((N,), b), logits.size, dtype=dtype, axis=0)
  z = _conditional_gumbel_axis0(jax.random.key(42), columns(logits, N, dtype), sample)
  assert z.dtype == dtype
  assert np.all(np.asarray(jnp.argmax(z, axis=0)) == b)


# --------------------------------------------------------------------------------
# 6. Conditional logistic.
# --------------------------------------------------------------------------------

_conditional_logistic = jax.jit(gumbax.conditional_logistic)
_BERNOULLI_LOGITS = np.array([0.0, 1.5, -2.0, 8.0, -8.0], np.float32)


def _logistic_cdf(loc: float):
  return lambda x: stats.logistic.cdf(x, loc=loc)


def _truncated_logistic_pit(z, loc: float, one: bool) -> np.ndarray:
  """PIT of z ~ Logistic(loc) truncated to (0, inf) (one) or (-inf, 0): uniform."""
  cdf = stats.logistic.cdf(np.asarray(z, np.float64), loc=loc)
  at_zero = stats.logistic.cdf(0.0, loc=loc)
  return (cdf - at_zero) / (1.0 - at_zero) if one else cdf / at_zero


def _conditional_logistic_draw(seed: int, binary: jax.Array) -> np.ndarray:
  """``conditional_logistic`` for the logits in rows, samples in columns; checks signs."""
  z = _conditional_logistic(jax.random.key(seed), columns(_BERNOULLI_LOGITS, N), binary)
  assert z.dtype == jnp.float32
  z = np.asarray(z, np.float64)
  assert np.all(np.isfinite(z))
  assert np.array_equal(z > 0, np.asarray(binary)), "sign(z) does not match the sample"
  return z


def test_conditional_logistic_law():
  """``conditional_logistic`` for logits in {0, 1.5, -2, 8, -8}:

  * ``z > 0`` exactly where the sample is 1;
  * with ``b ~ Bernoulli(sigmoid(l))`` (drawn by ``jax.random.bernoulli``), the
    marginal of z is Logistic(l) (KS);
  * given b = 1 (resp. 0) for every entry, z is Logistic(l) truncated to
    ``(0, inf)`` (resp. ``(-inf, 0)``): PIT + KS, including the unlikely side of
    ``l = +-8``.
  3 sub-tests per logit, each at ALPHA / 15.
  """
  alpha = ALPHA / (3 * _BERNOULLI_LOGITS.size)
  locs = _BERNOULLI_LOGITS.astype(np.float64)
  b = jax.random.bernoulli(jax.random.key(60), jax.nn.sigmoid(columns(_BERNOULLI_LOGITS, N)))
  z = _conditional_logistic_draw(61, b)
  for j, loc in enumerate(locs):
    assert_ks_fits(z[j], _logistic_cdf(loc), alpha, f"marginal, l={loc}")
  for one, seed in ((True, 62), (False, 63)):
    z = _conditional_logistic_draw(seed, jnp.full((locs.size, N), one))
    for j, loc in enumerate(locs):
      assert_ks_fits(_truncated_logistic_pit(z[j], loc, one), uniform_cdf, alpha,
                     f"given b={int(one)}, l={loc}")


def test_conditional_logistic_pit_rejects_unconditional_z():
  """Power control: the unconditional ``z = l + logistic`` fails the b = 1 PIT test.

  For every logit except l = 8, where b = 1 has probability 0.9997 and the two
  laws differ by 3e-4 in total variation, too little to see with N samples.
  """
  locs = _BERNOULLI_LOGITS.astype(np.float64)
  noise = np.asarray(jax.random.logistic(jax.random.key(64), (locs.size, N)), np.float64)
  for j, loc in enumerate(locs):
    if loc != 8.0:
      u = _truncated_logistic_pit(loc + noise[j], loc, True)
      assert stats.kstest(u, uniform_cdf).pvalue < ALPHA / (3 * locs.size), loc


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_conditional_logistic_sign_low_precision(dtype_name):
  """Low-precision logits: ``z > 0`` exactly where the sample is 1, z finite."""
  dtype = jnp.dtype(dtype_name)
  logits = columns(_BERNOULLI_LOGITS, N, dtype)
  b = jax.random.bernoulli(jax.random.key(65), 0.5, logits.shape)
  z = _conditional_logistic(jax.random.key(66), logits, b)
  assert z.dtype == dtype
  z = np.asarray(z.astype(jnp.float32))
  assert np.all(np.isfinite(z))
  assert np.array_equal(z > 0, np.asarray(b))


# --------------------------------------------------------------------------------
# 7. Straight-through samplers.
# --------------------------------------------------------------------------------


def _hard_gumbel_softmax_and_gumbel_max(key, logits, temperature, axis):
  return (gumbax.gumbel_softmax(key, logits, temperature, hard=True, axis=axis),
          gumbax.gumbel_max(key, logits, axis=axis))


_hard_and_max = jax.jit(_hard_gumbel_softmax_and_gumbel_max, static_argnums=3)
_hard_and_max_vmapped = jax.jit(
    jax.vmap(_hard_gumbel_softmax_and_gumbel_max, in_axes=(0, None, None, None)),
    static_argnums=3)


@pytest.mark.parametrize("dtype_name,axis,vmapped", [
    ("float32", -1, False), ("float32", 0, True), ("float16", 0, True),
    ("bfloat16", 0, False)])
def test_gumbel_softmax_hard_forward_equals_gumbel_max(dtype_name, axis, vmapped):
  """``gumbel_softmax(key, ., hard=True)`` equals ``gumbel_max(key, .)`` exactly.

  Jitted, with one key on 4096 rows or vmapped over 16 keys on 512 rows of
  random logits (6 categories, one masked in every third row), at temperatures
  0.1, 1 and 5. (The vmapped cases use the fast-compiling ``axis=0`` layout.)
  """
  dtype = jnp.dtype(dtype_name)
  rows = 512 if vmapped else 4096
  logits = np.random.default_rng(70).normal(0.0, 2.0, (rows, 6)).astype(np.float32)
  logits[::3, 2] = -np.inf
  logits = jnp.asarray(logits if axis == -1 else logits.T, dtype)
  for temperature in (0.1, 1.0, 5.0):
    if vmapped:
      hard, ref = _hard_and_max_vmapped(keys(71, 16), logits, temperature, axis)
    else:
      hard, ref = _hard_and_max(jax.random.key(71), logits, temperature, axis)
    assert hard.dtype == dtype and hard.shape == ref.shape
    category_axis = axis % logits.ndim + int(vmapped)  # vmap adds a leading key axis
    assert np.all(np.asarray(ref.astype(jnp.float32)).sum(axis=category_axis) == 1)
    np.testing.assert_array_equal(np.asarray(hard), np.asarray(ref))


_straight_through_axis0 = jax.jit(
    lambda key, logits, t: gumbax.straight_through(key, logits, temperature=t, axis=0))


def test_straight_through_frequencies_equal_softmax():
  """``straight_through``'s forward value is a one-hot Categorical(softmax) sample
  whatever the backward temperature: chi-square at two temperatures (ALPHA / 2 each),
  with a masked category."""
  logits = np.append(random_logits(73, 5), -np.inf).astype(np.float32)
  for seed, temperature in ((74, 0.3), (75, 3.0)):
    y = _straight_through_axis0(jax.random.key(seed), columns(logits, N), temperature)
    assert_chi2_fits(category_counts(y, axis=0), softmax_np(logits), ALPHA / 2,
                     f"tau={temperature}")


_hard_relaxed_bernoulli = jax.jit(
    lambda key, logits: gumbax.relaxed_bernoulli(key, logits, 0.5, hard=True))


def _relaxed_bernoulli_ones(dtype) -> np.ndarray:
  """Number of ones per logit in 2N hard relaxed-Bernoulli draws (checks they are 0/1)."""
  y = _hard_relaxed_bernoulli(jax.random.key(80), columns(_BERNOULLI_LOGITS, 2 * N, dtype))
  assert y.dtype == dtype
  y = np.asarray(y.astype(jnp.float32))
  assert np.all((y == 0) | (y == 1))
  return y.sum(axis=1)


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_relaxed_bernoulli_hard_frequencies(dtype_name):
  """``relaxed_bernoulli(hard=True)`` is exactly 0/1 and Bernoulli(sigmoid(l)):
  exact binomial test per logit (ALPHA / 5 each), logits up to +-8."""
  dtype = jnp.dtype(dtype_name)
  ones = _relaxed_bernoulli_ones(dtype)
  rounded = np.asarray(jnp.asarray(_BERNOULLI_LOGITS, dtype).astype(jnp.float32), np.float64)
  probs = 1.0 / (1.0 + np.exp(-rounded))
  for count, p in zip(ones, probs):
    pvalue = stats.binomtest(int(count), 2 * N, p).pvalue
    assert pvalue >= ALPHA / probs.size, (p, count)


def test_relaxed_bernoulli_binomial_rejects_shifted_logit():
  """Power control: the binomial test rejects Bernoulli(sigmoid(0.1)) for the l = 0 draws."""
  ones = _relaxed_bernoulli_ones(jnp.dtype("float32"))
  assert _BERNOULLI_LOGITS[0] == 0.0
  wrong = 1.0 / (1.0 + np.exp(-0.1))
  assert stats.binomtest(int(ones[0]), 2 * N, wrong).pvalue < ALPHA
