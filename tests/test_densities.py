"""Tests for the relaxed densities in ``gumbax.densities``.

Every value test compares the library with a computation that does not share its
formula: numerical integration (normalization, CDFs), the change of variables from
the logistic or Gumbel noise that defines each distribution (scipy.stats densities,
float64), or the closed forms of Maddison et al. evaluated directly (not in log
space) in float64 NumPy. Precision-sensitive checks run the library in float64
(``jax.enable_x64``) so that tolerances can be tight; float32 checks use tolerances
derived from float32 rounding (``F32_RTOL`` / ``F32_ATOL``).

Derivation used by the Gumbel-integral references. With ``s_i = (l_i + g_i) / tau``
(``g`` i.i.d. standard Gumbel), ``x = s - logsumexp(s)`` and ``c = logsumexp(s)``,
the map ``g -> (x_1, ..., x_{k-1}, c)`` is ``g_i = tau (x_i + c) - l_i`` with
``x_k = log(1 - sum_{i<k} exp(x_i))``; its Jacobian determinant is
``tau^k / y_k`` (``y = exp(x)``). Hence, with ``f_G`` the Gumbel density and
``I(x) = tau^k * integral over c of prod_i f_G(tau (x_i + c) - l_i)``:

* Lebesgue density of ``(x_1, ..., x_{k-1})``: ``I(x) / y_k``;
* Lebesgue density of ``(y_1, ..., y_{k-1})``: ``I(x) / prod_i y_i``.

Library calls go through module-level ``jax.jit`` wrappers with a few fixed shapes:
eager execution compiles every primitive for every new shape (about 2 s per call
on 2 CPU cores), so eager calls are confined to the jit/vmap-vs-eager test.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu
from scipy import integrate, special, stats

import gumbax

# False-failure rate of every statistical (KS) test in this file.
ALPHA = 1e-6

# Float32 tolerances for log-densities. The library sums a handful of terms
# (log tau, logits, tau * log y, (tau + 1) log y, logsumexp) whose magnitudes stay
# below ~60 in these tests; float32 rounding (eps = 1.2e-7) of each term bounds the
# absolute error by about 10 * 60 * 1.2e-7 ~ 7e-5 (observed here: <= 7.2e-6).
F32_ATOL = 1e-4
F32_RTOL = 1e-5
# Same computation, different float32 evaluation order (jit fusion, vmap, axis).
REORDER_TOL = dict(rtol=1e-5, atol=1e-5)

CATEGORICAL = ["concrete_log_prob", "exp_concrete_log_prob"]
BINARY = ["binary_concrete_log_prob", "binary_concrete_logit_log_prob"]
ALL_FNS = CATEGORICAL + BINARY

J = {name: jax.jit(getattr(gumbax, name),
                   static_argnames=("axis",) if name in CATEGORICAL else ())
     for name in ALL_FNS}
gumbel_softmax = jax.jit(gumbax.gumbel_softmax, static_argnames=("hard", "axis"))
log_gumbel_softmax = jax.jit(gumbax.log_gumbel_softmax, static_argnames=("axis",))
relaxed_bernoulli = jax.jit(gumbax.relaxed_bernoulli, static_argnames=("hard",))


def x64():
  return jax.enable_x64(True)


# ---------------------------------------------------------------------------
# Independent float64 references (NumPy / SciPy only).
# ---------------------------------------------------------------------------


def ref_concrete_closed_form(y, logits, tau):
  """log of REFERENCES sec. 2, evaluated directly (not in log space), float64.

  ``Gamma(k) tau^(k-1) (sum_i pi_i / y_i^tau)^(-k) prod_i pi_i / y_i^(tau+1)``
  with ``pi = softmax(logits)`` (normalized); shapes (..., k), tau a Python float.
  """
  y = np.asarray(y, np.float64)
  pi = special.softmax(np.asarray(logits, np.float64), axis=-1)
  k = y.shape[-1]
  dens = (math.gamma(k) * tau ** (k - 1) * np.sum(pi / y ** tau, axis=-1) ** (-k)
          * np.prod(pi / y ** (tau + 1), axis=-1))
  return np.log(dens)


def ref_binary_from_logistic(y, logit, tau):
  """Change of variables: y = sigmoid((logit + L) / tau), L ~ Logistic(0, 1).

  ``L = tau logit(y) - logit`` and ``|dL/dy| = tau / (y (1 - y))``.
  """
  y = np.asarray(y, np.float64)
  lvar = tau * special.logit(y) - logit
  return stats.logistic.logpdf(lvar) + np.log(tau) - np.log(y) - np.log1p(-y)


def ref_k2_from_logistic(y, l1, l2, tau):
  """Log-density of a k = 2 point y = (y1, y2) (shape (n, 2)) as a Binary Concrete.

  On the simplex y1 ~ BinaryConcrete(l1 - l2) and y2 ~ BinaryConcrete(l2 - l1); the
  reference reads the smaller coordinate, which carries the relative precision of a
  float32 point that is only approximately on the simplex.
  """
  y = np.asarray(y, np.float64)
  first = y[:, 0] <= y[:, 1]
  return np.where(first, ref_binary_from_logistic(np.where(first, y[:, 0], 0.5), l1 - l2, tau),
                  ref_binary_from_logistic(np.where(first, 0.5, y[:, 1]), l2 - l1, tau))


def ref_binary_logit_from_logistic(x, logit, tau):
  """x = (logit + L) / tau: density tau * f_L(tau x - logit)."""
  return stats.logistic.logpdf(tau * np.asarray(x, np.float64) - logit) + np.log(tau)


def ref_binary_maddison(y, logit, tau):
  """Maddison et al.: tau a y^(-tau-1) (1-y)^(-tau-1) / (a y^(-tau) + (1-y)^(-tau))^2."""
  y = np.asarray(y, np.float64)
  a = np.exp(logit)
  return np.log(tau * a * y ** (-tau - 1) * (1 - y) ** (-tau - 1)
                / (a * y ** (-tau) + (1 - y) ** (-tau)) ** 2)


def gumbel_logpdf(z):
  """Standard Gumbel log-density -(z + e^-z) (checked against scipy.stats below)."""
  return -(z + np.exp(-z))


def test_gumbel_logpdf_reference():
  # The helper, and gumbax's own Gumbel density and CDF, against scipy.stats.
  z = np.linspace(-5.0, 30.0, 80)
  np.testing.assert_allclose(gumbel_logpdf(z), stats.gumbel_r.logpdf(z), rtol=1e-13, atol=1e-13)
  with x64():
    lp, cdf = jax.jit(lambda z: (gumbax.gumbel_log_prob(z), gumbax.gumbel_cdf(z)))(z)
  np.testing.assert_allclose(lp, stats.gumbel_r.logpdf(z), rtol=1e-13, atol=1e-13)
  np.testing.assert_allclose(cdf, stats.gumbel_r.cdf(z), rtol=1e-13, atol=1e-13)


def ref_log_gumbel_integral(x, logits, tau):
  """log I(x) (module docstring) by quadrature over the Gumbel shift, float64.

  Substituting ``t = tau c + const`` turns the integral into
  ``tau^(k-1) * int prod_i f_G(t + d_i) dt`` with ``d = tau x - logits`` centred.
  The product is below e^-400 for t < -max(d) - 6 (Gumbel left tail) and decays
  like e^(-k t) on the right, so [-max(d) - 6, -min(d) + 100] holds all the mass.
  """
  x = np.asarray(x, np.float64)
  logits = np.asarray(logits, np.float64)
  k = x.shape[-1]
  d = tau * x - logits
  d = d - d.mean()
  val, err = integrate.quad(
      lambda t: math.exp(np.sum(gumbel_logpdf(t + d))),
      -np.max(d) - 6.0, -np.min(d) + 100.0, points=[0.0],
      epsabs=0.0, epsrel=1e-12, limit=200)
  assert err < 1e-10 * val
  return (k - 1) * np.log(tau) + np.log(val)


def ref_exp_concrete_f64(x, logits, tau):
  """Maddison's ExpConcrete log-density (REFERENCES sec. 2) in float64 NumPy."""
  x = np.asarray(x, np.float64)
  logits = np.asarray(logits, np.float64)
  k = x.shape[-1]
  t = logits - tau * x
  return (special.gammaln(k) + (k - 1) * np.log(tau) + np.sum(t, -1)
          - k * special.logsumexp(t, axis=-1))


# ---------------------------------------------------------------------------
# Numerical integration and KS helpers.
# ---------------------------------------------------------------------------


def quad_half(pdf):
  """int_0^{1/2} pdf by quad (float64); pdf may have an integrable singularity at 0."""
  val, err = integrate.quad(pdf, 0.0, 0.5, epsabs=0.0, epsrel=1e-10, limit=200)
  return val, err


def ks_grid_statistic(samples, cdf, m):
  """Lower bound on the KS statistic D_n, evaluated at m sample quantiles.

  For any points t, |F_n(t) - F(t)| and |F_n(t-) - F(t)| are <= sup|F_n - F| = D_n
  (F continuous), so comparing this maximum with the exact KS critical value keeps
  the false-failure rate at most ALPHA. ``cdf`` maps the sorted grid to F.
  """
  s = np.sort(np.asarray(samples, np.float64))
  n = s.size
  grid = np.unique(s[np.linspace(0, n, m + 2)[1:-1].astype(int)])
  f = cdf(grid)
  assert np.all(np.diff(f) > 0) and 0 < f[0] and f[-1] < 1
  above = np.searchsorted(s, grid, side="right") / n
  below = np.searchsorted(s, grid, side="left") / n
  return max(np.max(np.abs(above - f)), np.max(np.abs(below - f))), n


def cumulative_quad(pdf, grid):
  """F(grid) = int_0^grid pdf, as a cumulative sum of quad over consecutive pieces."""
  edges = np.concatenate([[0.0], grid])
  pieces = [integrate.quad(pdf, a, b, epsabs=1e-13, epsrel=1e-10, limit=200)[0]
            for a, b in zip(edges[:-1], edges[1:])]
  return np.cumsum(pieces)


@jax.jit
def _softmax_chart_integrand(u, logits, tau):
  """p(y) * |d(y1, y2)/d(u1, u2)| for y = softmax(u1, u2, 0); the Jacobian is y1 y2 y3."""
  u = jnp.concatenate([u, jnp.zeros_like(u[:, :1])], axis=1)
  log_y = u - jax.nn.logsumexp(u, axis=1, keepdims=True)
  log_p = gumbax.concrete_log_prob(jnp.exp(log_y), logits[None], tau)
  return jnp.exp(log_p + jnp.sum(log_y, axis=1))


@jax.jit
def _stick_chart_integrand(ab, logits, tau):
  """p(y) * Jacobian for y1 = sigmoid(a), y2 = (1 - y1) sigmoid(b), y3 = the rest.

  d(y1, y2)/d(a, b) is triangular with determinant y1 (1 - y1)^2 w (1 - w) = y1 y2 y3
  (w = sigmoid(b)). ``{y1 <= t}`` is the half plane ``a <= logit(t)``, so marginal
  CDFs of y1 are integrals over rectangles.
  """
  a, b = ab[:, 0], ab[:, 1]
  log_y1 = jax.nn.log_sigmoid(a)
  log_rest = jax.nn.log_sigmoid(-a)
  log_y = jnp.stack([log_y1, log_rest + jax.nn.log_sigmoid(b),
                     log_rest + jax.nn.log_sigmoid(-b)], axis=1)
  log_p = gumbax.concrete_log_prob(jnp.exp(log_y), logits[None], tau)
  return jnp.exp(log_p + jnp.sum(log_y, axis=1))


def cubature(f, lo, hi, logits, tau, rtol=1e-9):
  res = integrate.cubature(lambda z: np.asarray(f(z, logits, tau)), lo, hi,
                           rtol=rtol, atol=1e-14, max_subdivisions=20000)
  assert res.status == "converged", res
  return res.estimate


def normal(seed, shape, scale=1.0):
  """float32 NumPy logits (host-side, so that no eager JAX op compiles)."""
  return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


# One batch shape, (1000, 5), for the sample-based categorical tests, so that the
# samplers, the densities and their gradients compile once for all of them.
SAMPLE_LOGITS = normal(5, (1000, 5), 1.5)
MASKED_LOGITS = SAMPLE_LOGITS.copy()
MASKED_LOGITS[:, [1, 3]] = -np.inf


def draw(logits, tau, seed):
  """Gumbel-softmax and log-Gumbel-softmax samples drawn with the same key."""
  key = jax.random.key(seed)
  return (np.asarray(gumbel_softmax(key, logits, tau)),
          np.asarray(log_gumbel_softmax(key, logits, tau)))


@jax.jit
def categorical_grads(x, y, logits, tau):
  """Gradients w.r.t. logits and temperature of summed ExpConcrete / Concrete densities."""
  ge = jax.grad(lambda l, t: jnp.sum(gumbax.exp_concrete_log_prob(x, l, t)), (0, 1))
  gc = jax.grad(lambda l, t: jnp.sum(gumbax.concrete_log_prob(y, l, t)), (0, 1))
  return ge(logits, tau) + gc(logits, tau)


def dirichlet_points(seed, k, n, conc=1.5):
  return np.random.default_rng(seed).dirichlet(np.full(k, conc), size=n)


def grid_01():
  """80 points of (0, 1), dense near both ends."""
  return np.concatenate([np.geomspace(1e-4, 0.1, 20), np.linspace(0.1, 0.9, 42)[1:-1],
                         1.0 - np.geomspace(0.1, 1e-4, 20)])


# ---------------------------------------------------------------------------
# 1. The Concrete density integrates to one.
# ---------------------------------------------------------------------------

LOGITS_2 = [(0.0, 0.0), (1.5, -0.5), (-2.0, 1.0)]
TAUS = [0.3, 0.7, 1.0, 2.0]


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("logits", LOGITS_2)
def test_concrete_k2_integrates_to_one(logits, tau):
  # int_0^1 p(t, 1-t) dt = int_0^{1/2} [p(t, 1-t) + p(1-t, t)] dt: both pieces have
  # their t^(tau-1) singularity at 0, where float64 resolves t fully (near t = 1 the
  # mass within one ulp of 1 is ~ (1e-16)^tau, 1e-5 at tau = 0.3). quad's error
  # estimates are ~1e-10; a wrong constant, exponent or temperature power changes
  # the integral by far more than the 1e-9 tolerance.
  logits = np.asarray(logits, np.float64)
  with x64():
    f = J["concrete_log_prob"]
    pdf = lambda t: (math.exp(f(np.array([t, 1.0 - t]), logits, tau))
                     + math.exp(f(np.array([1.0 - t, t]), logits, tau)))
    total, err = quad_half(pdf)
  assert err < 1e-9
  assert abs(total - 1.0) < 1e-9


def test_concrete_k3_integrates_to_one_dblquad_on_simplex():
  # Directly on the 2-simplex {y1, y2 > 0, y1 + y2 < 1}. At tau = 2 the density is
  # bounded and dblquad converges in ~10^4 evaluations; at tau <= 1 (edge and corner
  # singularities) it needs 10^5 - 10^6 scalar calls, minutes, so those temperatures
  # are integrated in the softmax chart below.
  logits, tau = np.array([0.3, -0.5, 1.0]), 2.0
  with x64():
    f = J["concrete_log_prob"]
    g = lambda y2, y1: math.exp(f(np.array([y1, y2, 1.0 - y1 - y2]), logits, tau))
    total, err = integrate.dblquad(g, 0.0, 1.0, 0.0, lambda y1: 1.0 - y1,
                                   epsabs=1e-10, epsrel=1e-8)
  assert err < 1e-7
  assert abs(total - 1.0) < 1e-7


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("logits", [(0.3, -0.5, 1.0), (2.0, -1.0, 0.0)])
def test_concrete_k3_integrates_to_one_softmax_chart(logits, tau):
  # For tau < 1 the density has integrable singularities on the simplex edges, so the
  # integral over the simplex is taken in the chart y = softmax(u1, u2, 0), u in R^2,
  # whose Jacobian y1 y2 y3 is computed independently. tau * u has a law free of tau
  # with exponential tails, so [-60/tau, 60/tau]^2 misses a mass below e^-50.
  # Adaptive Gauss-Kronrod cubature, rtol 1e-9; tolerance 1e-7.
  logits = np.asarray(logits)
  lim = 60.0 / tau
  with x64():
    total = cubature(_softmax_chart_integrand, [-lim, -lim], [lim, lim], logits, tau)
  assert abs(total - 1.0) < 1e-7


# ---------------------------------------------------------------------------
# 2. Pointwise comparisons with independent computations.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_concrete_k2_is_binary_concrete_from_logistic(dtype):
  t = grid_01()
  for l1, l2 in LOGITS_2:
    for tau in TAUS:
      with jax.enable_x64(dtype == "float64"):
        y = np.stack([t, 1.0 - t], axis=-1).astype(dtype)
        logits = np.broadcast_to(np.array([l1, l2], dtype), y.shape)
        got = np.asarray(J["concrete_log_prob"](y, logits, tau))
      assert got.dtype == dtype
      ref = ref_k2_from_logistic(y, l1, l2, tau)
      if dtype == "float64":
        np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11)
      else:
        np.testing.assert_allclose(got, ref, rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_concrete_matches_closed_form(k, dtype):
  y = dirichlet_points(k, k, 80)
  logits = np.random.default_rng(100 + k).normal(scale=1.5, size=(80, k))
  for tau in TAUS:
    with jax.enable_x64(dtype == "float64"):
      got = np.asarray(J["concrete_log_prob"](y.astype(dtype), logits.astype(dtype), tau))
    assert got.dtype == dtype
    ref = ref_concrete_closed_form(y.astype(dtype), logits.astype(dtype), tau)
    if dtype == "float64":
      np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    else:
      np.testing.assert_allclose(got, ref, rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("k", [3, 4])
def test_concrete_matches_gumbel_integral(k):
  # Lebesgue density of y_{1:k-1}: I(log y) / prod_i y_i (module docstring).
  y = dirichlet_points(7 * k, k, 6, conc=2.0)
  logits = np.random.default_rng(k).normal(size=k)
  for tau in [0.5, 1.3]:
    ref = [ref_log_gumbel_integral(np.log(p), logits, tau) - np.sum(np.log(p)) for p in y]
    with x64():
      got = np.asarray(J["concrete_log_prob"](y, np.broadcast_to(logits, y.shape), tau))
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------
# 3. Samples follow the density (KS tests, false-failure rate ALPHA each).
# ---------------------------------------------------------------------------


def test_gumbel_softmax_k2_first_coordinate_ks():
  logits, tau, n = np.array([0.8, -0.4]), 0.6, 100_000
  y1 = np.asarray(gumbel_softmax(jax.random.key(11), np.broadcast_to(
      logits.astype(np.float32), (n, 2)), tau))[:, 0]
  with x64():
    f = J["concrete_log_prob"]
    pdf = lambda t: math.exp(f(np.array([t, 1.0 - t]), logits, tau))
    stat, n = ks_grid_statistic(y1, lambda g: cumulative_quad(pdf, g), m=64)
  assert stat < stats.kstwo.isf(ALPHA, n), stat


def test_gumbel_softmax_k3_first_coordinate_ks():
  # Marginal CDF of y1: F(t) = integral of the density over {y1 <= t}, a half plane
  # a <= logit(t) in the stick chart (see _stick_chart_integrand).
  logits, tau, n = np.array([0.5, -0.3, 0.9]), 0.5, 100_000
  y1 = np.asarray(gumbel_softmax(jax.random.key(12), np.broadcast_to(
      logits.astype(np.float32), (n, 3)), tau))[:, 0]
  # a and b have exponential tails ~ e^(-tau |.|): [-20/tau, 20/tau] misses a mass
  # of ~1e-8. Cubature rtol 1e-6: CDF errors far below the KS threshold (~8.5e-3).
  lim = 20.0 / tau

  def cdf(grid):
    edges = np.concatenate([[-lim], special.logit(grid)])
    pieces = [cubature(_stick_chart_integrand, [a, -lim], [b, lim], logits, tau,
                       rtol=1e-6) for a, b in zip(edges[:-1], edges[1:])]
    return np.cumsum(pieces)

  with x64():
    stat, n = ks_grid_statistic(y1, cdf, m=16)
  assert stat < stats.kstwo.isf(ALPHA, n), stat


def test_relaxed_bernoulli_ks():
  logit, tau, n = 0.7, 0.5, 100_000
  y = np.asarray(relaxed_bernoulli(jax.random.key(13), np.full((n,), logit, np.float32), tau))
  with x64():
    f = J["binary_concrete_log_prob"]
    pdf = lambda t: math.exp(f(t, logit, tau))
    stat, n = ks_grid_statistic(y, lambda g: cumulative_quad(pdf, g), m=64)
  assert stat < stats.kstwo.isf(ALPHA, n), stat


# ---------------------------------------------------------------------------
# 4. ExpConcrete.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_exp_concrete_and_concrete_agree_on_samples(tau):
  logits = SAMPLE_LOGITS
  y, x = draw(logits, tau, seed=4)
  # Same key, same noise: the two samplers draw the same point.
  np.testing.assert_allclose(np.exp(x), y, rtol=1e-5, atol=1e-7)
  lp_y = np.asarray(J["concrete_log_prob"](y, logits, tau))
  lp_x = np.asarray(J["exp_concrete_log_prob"](x, logits, tau))
  assert np.all(np.isfinite(lp_y)) and np.all(np.isfinite(lp_x))
  np.testing.assert_allclose(lp_y, lp_x - np.sum(x.astype(np.float64), -1),
                             rtol=F32_RTOL, atol=F32_ATOL)
  # And both agree with the float64 closed form at the float32 sample.
  ref = ref_concrete_closed_form(np.exp(x.astype(np.float64)), logits, tau)
  np.testing.assert_allclose(lp_y, ref, rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_exp_concrete_matches_maddison_gumbel_integral(k):
  # Maddison et al.'s ExpConcrete formula equals I(x) of the module docstring: the
  # Lebesgue density of x_{1:k-1} multiplied by y_k (a density with respect to the
  # permutation-symmetric measure dx_{1:k-1} / y_k).
  y = dirichlet_points(3 * k, k, 6, conc=2.0)
  logits = np.random.default_rng(50 + k).normal(size=k)
  for tau in [0.4, 1.0, 1.7]:
    ref = [ref_log_gumbel_integral(np.log(p), logits, tau) for p in y]
    with x64():
      got = np.asarray(J["exp_concrete_log_prob"](
          np.log(y), np.broadcast_to(logits, y.shape), tau))
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def exp_concrete_k2_integral(logits, tau, weight_last):
  """int over x1 < 0 of p(x1, log(1 - e^x1)) [divided by y_2 if weight_last].

  The integrand behaves like e^(tau x1) as x1 -> -inf and like a power of
  -x1 as x1 -> 0, where float64 resolves x1 (and y_2 = -expm1(x1)) fully.
  """
  logits = np.asarray(logits, np.float64)
  f = J["exp_concrete_log_prob"]

  def g(x1):
    x2 = math.log(-math.expm1(x1))
    lp = float(f(np.array([x1, x2]), logits, tau))
    return math.exp(lp - x2) if weight_last else math.exp(lp)

  a, ea = integrate.quad(g, -np.inf, math.log(0.5), epsabs=0.0, epsrel=1e-10, limit=200)
  b, eb = integrate.quad(g, math.log(0.5), 0.0, epsabs=0.0, epsrel=1e-10, limit=200)
  return a + b, ea + eb


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.0])
@pytest.mark.parametrize("logits", LOGITS_2)
def test_exp_concrete_minus_last_coordinate_integrates_to_one(logits, tau):
  # exp_concrete_log_prob(x) - x_k is the Lebesgue density of x_{1:k-1}.
  with x64():
    total, err = exp_concrete_k2_integral(logits, tau, weight_last=True)
  assert err < 1e-8
  assert abs(total - 1.0) < 1e-8


# ---------------------------------------------------------------------------
# 5. Binary Concrete.
# ---------------------------------------------------------------------------

BINARY_LOGITS = [-2.0, 0.0, 1.5]


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("logit", BINARY_LOGITS)
def test_binary_concrete_integrates_to_one(logit, tau):
  # 1 - Y is Binary Concrete with logit -logit, so int_{1/2}^1 p(y; l) dy =
  # int_0^{1/2} p(t; -l) dt, which float64 resolves near the singular end point
  # (y itself cannot be represented within 1e-16 of 1, where a mass of ~1e-16^tau
  # lies). For tau >= 0.7 the upper half is also integrated directly.
  f = J["binary_concrete_log_prob"]
  with x64():
    total, err = quad_half(lambda t: math.exp(f(t, logit, tau)) + math.exp(f(t, -logit, tau)))
    assert err < 1e-9
    assert abs(total - 1.0) < 1e-9
    if tau >= 0.7:
      lower, _ = quad_half(lambda t: math.exp(f(t, logit, tau)))
      upper, err = integrate.quad(lambda t: math.exp(f(t, logit, tau)), 0.5, 1.0,
                                  epsabs=0.0, epsrel=1e-10, limit=200)
      assert abs(lower + upper - 1.0) < 1e-9


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("logit", BINARY_LOGITS)
def test_binary_concrete_logit_integrates_to_one(logit, tau):
  f = J["binary_concrete_logit_log_prob"]
  with x64():
    total, err = integrate.quad(lambda x: math.exp(f(x, logit, tau)),
                                -np.inf, np.inf, epsabs=0.0, epsrel=1e-10, limit=200)
  assert err < 1e-9
  assert abs(total - 1.0) < 1e-9


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_concrete_matches_maddison_and_logistic(dtype):
  t = grid_01()
  for logit in BINARY_LOGITS:
    for tau in TAUS:
      with jax.enable_x64(dtype == "float64"):
        ty = t.astype(dtype)
        got = np.asarray(J["binary_concrete_log_prob"](ty, np.full_like(ty, logit), tau))
      assert got.dtype == dtype
      ref_a = ref_binary_maddison(ty, logit, tau)
      ref_b = ref_binary_from_logistic(ty, logit, tau)
      np.testing.assert_allclose(ref_a, ref_b, rtol=1e-12, atol=1e-12)
      if dtype == "float64":
        np.testing.assert_allclose(got, ref_a, rtol=1e-11, atol=1e-11)
      else:
        np.testing.assert_allclose(got, ref_a, rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_concrete_logit_matches_logistic(dtype):
  for logit in BINARY_LOGITS:
    for tau in TAUS:
      x = np.linspace(-40.0, 40.0, 80) / tau
      with jax.enable_x64(dtype == "float64"):
        xd = x.astype(dtype)
        got = np.asarray(J["binary_concrete_logit_log_prob"](xd, np.full_like(xd, logit), tau))
      assert got.dtype == dtype
      ref = ref_binary_logit_from_logistic(xd, logit, tau)
      if dtype == "float64":
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
      else:
        np.testing.assert_allclose(got, ref, rtol=F32_RTOL, atol=F32_ATOL)


def test_binary_concrete_is_logit_density_times_jacobian():
  # p_Y(y) = p_X(logit y) / (y (1 - y)), float64, at 80 points (x = logit(y) is
  # recomputed from the rounded y, whose 1 - y is only 1e-16 / (1 - y) accurate).
  y = special.expit(np.linspace(-30.0, 30.0, 80))
  x = special.logit(y)
  with x64():
    for logit in BINARY_LOGITS:
      for tau in TAUS:
        lp_y = np.asarray(J["binary_concrete_log_prob"](y, np.full_like(y, logit), tau))
        lp_x = np.asarray(J["binary_concrete_logit_log_prob"](x, np.full_like(x, logit), tau))
        np.testing.assert_allclose(lp_y, lp_x - np.log(y) - np.log1p(-y), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------
# 6. Low temperatures.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.01, 0.02, 0.05])
def test_low_temperature_exp_concrete(tau):
  logits = SAMPLE_LOGITS
  y, x = draw(logits, tau, seed=21)
  assert np.min(x) < -100.0  # exp(x) underflows in float32
  got = np.asarray(J["exp_concrete_log_prob"](x, logits, tau))
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, ref_exp_concrete_f64(x, logits, tau),
                             rtol=F32_RTOL, atol=F32_ATOL)
  # The same samples as plain Concrete samples underflow to exact zeros, yet the
  # Concrete density stays finite.
  assert np.any(y == 0.0)
  assert np.all(np.isfinite(np.asarray(J["concrete_log_prob"](y, logits, tau))))
  # Gradients w.r.t. logits and temperature stay finite too.
  for g in categorical_grads(x, y, logits, np.float32(tau)):
    assert np.all(np.isfinite(np.asarray(g)))


@jax.jit
def _low_temp_binary_grads(y, x, logits, tau):
  gy = jax.grad(lambda l, t: jnp.sum(gumbax.binary_concrete_log_prob(y, l, t)), (0, 1))
  gx = jax.grad(lambda l, t: jnp.sum(gumbax.binary_concrete_logit_log_prob(x, l, t)), (0, 1))
  return gy(logits, tau) + gx(logits, tau)


@pytest.mark.parametrize("tau", [0.01, 0.05])
def test_low_temperature_binary(tau):
  logits = normal(22, (4000,), 2.0)
  noise = np.random.default_rng(23).logistic(size=4000).astype(np.float32)
  x = (logits + noise) / np.float32(tau)
  got = np.asarray(J["binary_concrete_logit_log_prob"](x, logits, tau))
  np.testing.assert_allclose(got, ref_binary_logit_from_logistic(x, logits, tau),
                             rtol=F32_RTOL, atol=F32_ATOL)
  y = np.asarray(relaxed_bernoulli(jax.random.key(23), logits, tau))
  assert np.any(y == 0.0) and np.any(y == 1.0)
  assert np.all(np.isfinite(np.asarray(J["binary_concrete_log_prob"](y, logits, tau))))
  for g in _low_temp_binary_grads(y, x, logits, np.float32(tau)):
    assert np.all(np.isfinite(np.asarray(g)))


# ---------------------------------------------------------------------------
# 7. Masked categories.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.4, 1.0, 2.0])
def test_masked_category_reduces_to_smaller_simplex(tau):
  t = grid_01()
  a, b = 1.0, -0.5
  logits3 = np.broadcast_to(np.array([a, -np.inf, b], np.float32), (t.size, 3))
  logits2 = np.broadcast_to(np.array([a, b], np.float32), (t.size, 2))
  y3 = np.stack([t, np.zeros_like(t), 1.0 - t], -1).astype(np.float32)
  got = np.asarray(J["concrete_log_prob"](y3, logits3, tau))
  want = np.asarray(J["concrete_log_prob"](y3[:, [0, 2]], logits2, tau))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # Independent: the Binary Concrete density of y1 with logit a - b.
  np.testing.assert_allclose(got, ref_k2_from_logistic(y3[:, [0, 2]], a, b, tau),
                             rtol=F32_RTOL, atol=F32_ATOL)
  # ExpConcrete: the masked coordinate is ignored whatever its value.
  x3 = np.log(np.maximum(y3, 1e-30))
  want_x = np.asarray(J["exp_concrete_log_prob"](x3[:, [0, 2]], logits2, tau))
  for fill in [np.finfo(np.float32).min, -5.0, 0.0]:
    x3[:, 1] = fill
    got_x = np.asarray(J["exp_concrete_log_prob"](x3, logits3, tau))
    np.testing.assert_allclose(got_x, want_x, rtol=1e-6, atol=1e-6)


def test_masked_categories_on_samples_and_other_axis():
  tau = 0.7
  logits, masked_logits = SAMPLE_LOGITS, MASKED_LOGITS
  y, x = draw(masked_logits, tau, seed=31)
  assert np.all(y[:, [1, 3]] == 0.0)
  keep = np.array([0, 2, 4])
  # The k = 3 density of the kept coordinates (float64 closed form).
  ref = ref_concrete_closed_form(y[:, keep], logits[:, keep], tau)
  got = np.asarray(J["concrete_log_prob"](y, masked_logits, tau))
  np.testing.assert_allclose(got, ref, rtol=F32_RTOL, atol=F32_ATOL)
  got_x = np.asarray(J["exp_concrete_log_prob"](x, masked_logits, tau))
  np.testing.assert_allclose(got_x, ref_exp_concrete_f64(x[:, keep], logits[:, keep], tau),
                             rtol=F32_RTOL, atol=F32_ATOL)
  np.testing.assert_allclose(got_x - np.sum(x[:, keep].astype(np.float64), -1), got,
                             rtol=F32_RTOL, atol=F32_ATOL)
  # Category axis first.
  got_t = np.asarray(J["concrete_log_prob"](y.T, masked_logits.T, tau, axis=0))
  np.testing.assert_allclose(got_t, got, **REORDER_TOL)
  # Gradients: finite, zero for the masked logits, non-zero for the others.
  g_exp_l, g_exp_t, g_con_l, g_con_t = map(np.asarray, categorical_grads(
      x, y, masked_logits, np.float32(tau)))
  for g in [g_exp_l, g_con_l]:
    assert np.all(np.isfinite(g)) and np.all(g[:, [1, 3]] == 0.0)
    assert np.all(g[:, keep] != 0.0)
  assert np.isfinite(g_exp_t) and np.isfinite(g_con_t)


# ---------------------------------------------------------------------------
# 8. Per-example temperatures broadcast along the batch, not the category axis.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CATEGORICAL)
def test_per_example_temperature(name):
  fn = J[name]
  # B == K, so that a temperature wrongly broadcast along the categories would give
  # a result of the right shape and wrong values.
  n = 4
  logits = normal(40, (n, n))
  tau = np.array([0.3, 0.7, 1.0, 2.5], np.float32)
  y = dirichlet_points(41, n, n).astype(np.float32)
  sample = np.log(y) if name == "exp_concrete_log_prob" else y
  y = y.astype(np.float64)
  got = np.asarray(fn(sample, logits, tau))
  assert got.shape == (n,)
  rows = np.array([float(fn(sample[i], logits[i], float(tau[i]))) for i in range(n)])
  np.testing.assert_allclose(got, rows, **REORDER_TOL)
  # The independent reference, row by row.
  ref = np.array([ref_concrete_closed_form(y[i], logits[i], float(tau[i])) for i in range(n)])
  if name == "exp_concrete_log_prob":
    ref = ref + np.sum(np.log(y), -1)
  np.testing.assert_allclose(got, ref, rtol=F32_RTOL, atol=F32_ATOL)
  # Category axis first: the temperature still indexes the batch.
  np.testing.assert_allclose(np.asarray(fn(sample.T, logits.T, tau, axis=0)), got,
                             **REORDER_TOL)
  # A temperature of shape (B, 1) enlarges the batch shape, as NumPy broadcasting
  # (and TFP's / PyTorch's log_prob) would: entry [i, j] is row j at temperature i.
  big = np.asarray(fn(sample, logits, tau[:, None]))
  assert big.shape == (n, n)
  for i in range(n):
    np.testing.assert_allclose(big[i], np.asarray(fn(sample, logits, float(tau[i]))),
                               **REORDER_TOL)


@pytest.mark.parametrize("name", BINARY)
def test_per_element_temperature_binary(name):
  fn = J[name]
  b, n = 3, 3  # square, for the same reason as above
  logits = normal(42, (b, n))
  y = np.random.default_rng(43).uniform(0.01, 0.99, (b, n)).astype(np.float32)
  sample = special.logit(y) if name == "binary_concrete_logit_log_prob" else y
  ref_fn = (ref_binary_logit_from_logistic if name == "binary_concrete_logit_log_prob"
            else ref_binary_from_logistic)
  for tau in [np.array([[0.3, 0.6, 1.0], [1.5, 2.0, 0.8], [0.5, 0.9, 3.0]], np.float32),
              np.array([0.3, 1.0, 2.5], np.float32), np.array([[0.4], [1.0], [2.0]], np.float32)]:
    got = np.asarray(fn(sample, logits, tau))
    assert got.shape == (b, n)
    full = np.broadcast_to(np.asarray(tau), (b, n))
    want = np.array([[float(fn(sample[i, j], logits[i, j], float(full[i, j])))
                      for j in range(n)] for i in range(b)])
    np.testing.assert_allclose(got, want, **REORDER_TOL)
    np.testing.assert_allclose(got, ref_fn(sample, logits, full),
                               rtol=F32_RTOL, atol=F32_ATOL)
  with pytest.raises(ValueError, match="temperature"):
    jax.eval_shape(lambda: getattr(gumbax, name)(sample, logits, np.ones((b + 1,), np.float32)))


# ---------------------------------------------------------------------------
# 9. Gradients.
# ---------------------------------------------------------------------------

_Y3, _L3 = np.array([0.2, 0.5, 0.3]), np.array([0.4, -1.0, 0.7])
_Y3B, _L3B = np.array([0.05, 0.8, 0.15]), np.array([2.0, 0.0, -0.5])
_YB, _LB = np.array([0.1, 0.45, 0.93]), np.array([-1.0, 0.2, 1.5])
GRAD_POINTS = {
    "concrete_log_prob": [(_Y3, _L3, 0.6), (_Y3B, _L3B, 1.7)],
    "exp_concrete_log_prob": [(np.log(_Y3), _L3, 0.6), (np.log(_Y3B), _L3B, 0.25)],
    "binary_concrete_log_prob": [(_YB, _LB, 0.5), (1.0 - _YB, -_LB, 2.5)],
    "binary_concrete_logit_log_prob": [(special.logit(_YB), _LB, 1.3),
                                       (-5.0 * special.logit(_YB), _LB, 0.2)],
}


@pytest.mark.parametrize("name", ALL_FNS)
def test_check_grads(name):
  # Float64 finite differences against forward- and reverse-mode derivatives with
  # respect to the sample, the logits and the temperature, at two points each.
  fn = J[name]
  with x64():
    for sample, logits, tau in GRAD_POINTS[name]:
      args = (sample, logits, np.asarray(tau, np.float64))
      jtu.check_grads(fn, args, order=1, modes=["rev"])
      jtu.check_grads(fn, args, order=1, modes=["fwd"])
      out, pullback = jax.vjp(fn, *args)
      for g in pullback(np.ones_like(out)):
        assert np.all(np.isfinite(np.asarray(g)))


def test_temperature_gradient_matches_reference_finite_difference():
  # d/dtau of the log-density, against a central difference of the float64
  # closed form (independent of the library's autodiff and formula).
  with x64():
    grad = jax.jit(jax.grad(gumbax.concrete_log_prob, argnums=2))
    for tau in [0.4, 1.0, 2.2]:
      g = float(grad(_Y3, _L3, tau))
      h = 1e-5
      fd = (ref_concrete_closed_form(_Y3, _L3, tau + h)
            - ref_concrete_closed_form(_Y3, _L3, tau - h)) / (2 * h)
      assert abs(g - fd) < 1e-7 * (1 + abs(fd)), (g, fd)


# ---------------------------------------------------------------------------
# 10. jit and vmap against eager.
# ---------------------------------------------------------------------------


def batch_inputs(name):
  """(6, 3) float32 inputs: simplex points, their logs, or points of (0, 1) / R."""
  logits = normal(60, (6, 3))
  if name in CATEGORICAL:
    sample = dirichlet_points(61, 3, 6).astype(np.float32)
    return (np.log(sample) if name == "exp_concrete_log_prob" else sample), logits
  sample = np.random.default_rng(62).uniform(0.01, 0.99, (6, 3)).astype(np.float32)
  return (special.logit(sample) if name == "binary_concrete_logit_log_prob" else sample), logits


def jit_vmap_variants(fn):
  """One jitted program holding every jit / vmap form checked below."""
  def variants(sample, logits, taus, tau_b):
    return (fn(sample, logits, 0.8),
            jax.vmap(fn, (0, 0, None))(sample, logits, 0.8),       # samples and logits
            jax.vmap(fn, (0, None, None))(sample, logits[0], 0.8),  # samples only
            jax.vmap(fn, (None, 0, None))(sample[0], logits, 0.8),  # logits only
            jax.vmap(fn, (None, None, 0))(sample, logits, taus),    # temperatures
            jax.vmap(fn)(sample, logits, tau_b))                    # per-example tau
  return jax.jit(variants)


@pytest.mark.parametrize("name", ALL_FNS)
def test_jit_and_vmap_match_eager(name):
  fn = getattr(gumbax, name)
  sample, logits = batch_inputs(name)
  taus = np.array([0.3, 0.8, 2.0], np.float32)
  tau_b = np.linspace(0.3, 2.0, 6).astype(np.float32)
  got = jit_vmap_variants(fn)(sample, logits, taus, tau_b)
  # Eager references: batched calls with explicitly broadcast inputs.
  eager = np.asarray(fn(sample, logits, 0.8))
  bcast = lambda a: np.broadcast_to(a[:1], a.shape)
  want = (eager, eager,
          np.asarray(fn(sample, bcast(logits), 0.8)),
          np.asarray(fn(bcast(sample), logits, 0.8)),
          np.stack([np.asarray(fn(sample, logits, float(t))) for t in taus]),
          np.asarray(fn(sample, logits, tau_b if name in CATEGORICAL else tau_b[:, None])))
  for g, w in zip(got, want):
    assert g.shape == w.shape
    np.testing.assert_allclose(np.asarray(g), w, **REORDER_TOL)


# ---------------------------------------------------------------------------
# 11. Shapes, dtypes and bad input.
# ---------------------------------------------------------------------------


@jax.jit
def all_densities(y, x, yb, xb, logits, tau):
  return (gumbax.concrete_log_prob(y, logits, tau), gumbax.exp_concrete_log_prob(x, logits, tau),
          gumbax.binary_concrete_log_prob(yb, logits, tau),
          gumbax.binary_concrete_logit_log_prob(xb, logits, tau))


def all_inputs():
  return [batch_inputs(name)[0] for name in ALL_FNS] + [batch_inputs(ALL_FNS[0])[1]]


@pytest.mark.parametrize("name", ALL_FNS)
def test_low_precision_inputs_return_float32(name):
  fn = getattr(gumbax, name)
  sample, logits = batch_inputs(name)
  out_shape = (6,) if name in CATEGORICAL else (6, 3)
  for dtype in [jnp.float16, jnp.bfloat16]:
    s_lo, l_lo = sample.astype(dtype), logits.astype(dtype)
    for args in [(s_lo, l_lo, 0.8), (s_lo, logits, 0.8), (sample, l_lo, np.asarray(0.8, dtype)),
                 (s_lo, l_lo, np.asarray(0.8, dtype))]:
      out = jax.eval_shape(fn, *args)
      assert out.dtype == jnp.float32 and out.shape == out_shape, (dtype, args)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_values_computed_in_float32(dtype):
  # The results match float64 references at the rounded inputs to float32
  # accuracy; arithmetic in float16 / bfloat16 would be off by ~1e-3 / 1e-2.
  lo = [a.astype(dtype) for a in all_inputs()]
  tau = np.asarray(0.75, dtype)  # exactly representable
  got = all_densities(*lo, tau)
  y, x, yb, xb, logits = [a.astype(np.float64) for a in lo]
  refs = [ref_concrete_closed_form(y, logits, 0.75),
          ref_concrete_closed_form(np.exp(x), logits, 0.75) + np.sum(x, -1),
          ref_binary_from_logistic(yb, logits, 0.75),
          ref_binary_logit_from_logistic(xb, logits, 0.75)]
  for g, r in zip(got, refs):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(g), r, rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("name", ALL_FNS)
def test_float64_inputs_return_float64(name):
  fn = getattr(gumbax, name)
  sample, logits = batch_inputs(name)
  with x64():
    s64 = np.asarray(sample, np.float64)
    l64 = np.asarray(logits, np.float64)
    assert jax.eval_shape(fn, s64, l64, 0.8).dtype == jnp.float64
    assert jax.eval_shape(fn, s64, l64, np.float32(0.8)).dtype == jnp.float64
    assert jax.eval_shape(fn, s64, l64.astype(np.float32), 0.8).dtype == jnp.float64
    assert jax.eval_shape(fn, s64.astype(np.float32), l64, 0.8).dtype == jnp.float64
    # float32 inputs stay float32 with x64 enabled.
    assert jax.eval_shape(fn, s64.astype(np.float32), l64.astype(np.float32),
                          0.8).dtype == jnp.float32
  # And the float64 values are float64-accurate (closed form / logistic references).
  with x64():
    got = np.asarray(J[name](s64, l64, 0.8))
  assert got.dtype == np.float64
  if name == "concrete_log_prob":
    ref = ref_concrete_closed_form(s64, l64, 0.8)
  elif name == "exp_concrete_log_prob":
    ref = ref_concrete_closed_form(np.exp(s64), l64, 0.8) + np.sum(s64, -1)
  elif name == "binary_concrete_log_prob":
    ref = ref_binary_from_logistic(s64, l64, 0.8)
  else:
    ref = ref_binary_logit_from_logistic(s64, l64, 0.8)
  np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def test_output_shapes_and_broadcasting():
  logits = normal(70, (2, 5, 3))
  y = dirichlet_points(71, 3, 10).reshape(2, 5, 3).astype(np.float32)
  shape = lambda *a, **k: jax.eval_shape(
      lambda: gumbax.concrete_log_prob(*a, **k)).shape
  assert shape(y, logits, 0.5) == (2, 5)
  assert shape(y, logits, 0.5, axis=1) == (2, 3)
  assert shape(y, logits, 0.5, axis=0) == (5, 3)
  assert shape(y, logits, np.full((2, 5), 0.5, np.float32)) == (2, 5)
  assert shape(y, logits, np.full((5,), 0.5, np.float32)) == (2, 5)
  assert shape(y, logits[:, :1], 0.5) == (2, 5)
  assert jax.eval_shape(lambda: gumbax.binary_concrete_log_prob(
      0.3, np.zeros((4, 2), np.float32), 0.5)).shape == (4, 2)
  # Same-rank broadcasting: one sample against a batch of logits.
  lp = np.asarray(J["concrete_log_prob"](y[:1], logits, 0.5))
  assert lp.shape == (2, 5)
  np.testing.assert_allclose(lp, ref_concrete_closed_form(np.broadcast_to(y[:1], y.shape),
                                                          logits, 0.5),
                             rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("name,sample_name", [("concrete_log_prob", "y"),
                                              ("exp_concrete_log_prob", "x")])
def test_categorical_bad_input(name, sample_name):
  fn = getattr(gumbax, name)
  call = lambda *a, **k: jax.eval_shape(lambda: fn(*a, **k))
  logits = np.zeros((2, 3), np.float32)
  good = np.full((2, 3), 1 / 3 if sample_name == "y" else -np.log(3.0), np.float32)
  with pytest.raises(ValueError, match=f"`{sample_name}`"):
    call(np.full((2, 4), 0.25, np.float32), logits, 1.0)  # category counts differ
  with pytest.raises(ValueError, match=f"`{sample_name}`"):
    call(np.full((5, 3), 0.25, np.float32), logits, 1.0)  # batch shapes do not broadcast
  with pytest.raises(TypeError, match=f"`{sample_name}`"):
    call(np.ones((2, 3), np.int32), logits, 1.0)
  with pytest.raises(TypeError, match="`logits`"):
    call(good, np.zeros((2, 3), np.int32), 1.0)
  for bad_tau in [0, 0.0, -1.0, np.array([1.0, 0.0])]:
    with pytest.raises(ValueError, match="temperature"):
      call(good, logits, bad_tau)
  with pytest.raises(ValueError, match="temperature"):
    call(good, logits, np.ones((3,), np.float32))
  with pytest.raises(ValueError, match="axis"):
    call(good, logits, 1.0, axis=2)
  # The eager path raises the same errors.
  with pytest.raises(ValueError, match="temperature"):
    fn(good, logits, 0)
  with pytest.raises(ValueError, match=f"`{sample_name}`"):
    fn(np.full((2, 4), 0.25, np.float32), logits, 1.0)


@pytest.mark.parametrize("name,sample_name", [("binary_concrete_log_prob", "y"),
                                              ("binary_concrete_logit_log_prob", "x")])
def test_binary_bad_input(name, sample_name):
  fn = getattr(gumbax, name)
  call = lambda *a: jax.eval_shape(lambda: fn(*a))
  logits = np.zeros((2, 3), np.float32)
  half = np.full((2, 3), 0.5, np.float32)
  with pytest.raises(ValueError, match=f"`{sample_name}`"):
    call(np.full((2, 4), 0.5, np.float32), logits, 1.0)
  with pytest.raises(TypeError, match=f"`{sample_name}`"):
    call(np.ones((2, 3), np.int32), logits, 1.0)
  with pytest.raises(TypeError, match="`logits`"):
    call(half, np.zeros((2, 3), np.int32), 1.0)
  for bad_tau in [0, 0.0, -2.0]:
    with pytest.raises(ValueError, match="temperature"):
      call(half, logits, bad_tau)
  with pytest.raises(ValueError, match="temperature"):
    call(half, logits, np.ones((2, 3, 1), np.float32))
  with pytest.raises(ValueError, match="temperature"):
    fn(half, logits, 0.0)
