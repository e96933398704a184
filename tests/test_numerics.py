"""The finite-ness matrix: no inf or NaN in any output or gradient.

Every sampler and density, for float16, bfloat16, float32 and float64 logits
anywhere in the dtype's finite range (including its extremes and ``-inf`` masks),
at temperatures from 0.01 to 100, forward and backward (logits and temperature).
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gumbax
from _tolerance import assert_f32_close, f32_tol

DTYPES = ["float16", "bfloat16", "float32", "float64"]
TEMPERATURES = [0.01, 0.3, 1.0, 100.0]


def _x64(dtype):
  return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


def _logit_rows(dtype):
  """Rows of 4 logits spanning the finite range of `dtype`, with and without masks."""
  big = float(jnp.finfo(dtype).max)
  rows = [
      [big, -big, 0.0, 1.0],
      [big, big, big, big],
      [-big, -big, -big, -big],
      [-big, -0.5 * big, 0.0, 0.25 * big],
      [0.0, 1e-3, -1e-3, 2.0],
      [30.0, -30.0, 15.0, -15.0],
      [0.0, -jnp.inf, 1.0, -jnp.inf],     # masked
      [big, -jnp.inf, -big, 0.0],         # masked with extremes
  ]
  return jnp.asarray(rows, dtype=dtype)


def _finite(tree):
  return all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32) if x.dtype != jnp.float64 else x)))
             for x in jax.tree_util.tree_leaves(tree))


CATEGORICAL = {
    "gumbel_softmax": lambda k, l, t: gumbax.gumbel_softmax(k, l, t),
    "gumbel_softmax_hard": lambda k, l, t: gumbax.gumbel_softmax(k, l, t, hard=True),
    "log_gumbel_softmax": lambda k, l, t: gumbax.log_gumbel_softmax(k, l, t),
    "straight_through": lambda k, l, t: gumbax.straight_through(k, l, temperature=t),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CATEGORICAL))
def test_categorical_samplers_finite(dtype, name):
  fn = CATEGORICAL[name]
  with _x64(dtype):
    logits = _logit_rows(dtype)
    masked = jnp.isneginf(logits)
    weights = jax.random.normal(jax.random.key(3), logits.shape, dtype)

    @jax.jit
    def run(key, l, t):
      loss = lambda l, t: jnp.sum(fn(key, l, t).astype(jnp.float32) * weights.astype(jnp.float32))
      return fn(key, l, t), jax.grad(loss, argnums=(0, 1))(l, t)

    for temperature in TEMPERATURES:
      for seed in range(3):
        key = jax.random.key(seed)
        tau = jnp.full((logits.shape[0],), temperature, dtype)

        out, grads = run(key, logits, tau)
        assert out.dtype == logits.dtype
        assert _finite(out), (name, dtype, temperature, out)
        assert _finite(grads), (name, dtype, temperature, grads)
        # Masked categories: exactly zero probability and zero gradient.
        probs = jnp.exp(out.astype(jnp.float32)) if name.startswith("log") else out
        assert bool(jnp.all(jnp.where(masked, probs, 0) == 0))
        assert bool(jnp.all(jnp.where(masked, grads[0], 0) == 0))
        if name != "log_gumbel_softmax":
          total = jnp.sum(out.astype(jnp.float32), axis=-1)
          np.testing.assert_allclose(total, 1.0, atol=5e-3 if dtype in ("float16", "bfloat16") else 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hard", [False, True])
def test_relaxed_bernoulli_finite(dtype, hard):
  with _x64(dtype):
    logits = _logit_rows(dtype)
    logits = jnp.where(jnp.isneginf(logits), -float(jnp.finfo(dtype).max), logits)
    weights = jax.random.normal(jax.random.key(3), logits.shape, dtype)
    for temperature in TEMPERATURES:
      tau = jnp.full(logits.shape, temperature, dtype)
      key = jax.random.key(1)
      loss = lambda l, t: jnp.sum(
          gumbax.relaxed_bernoulli(key, l, t, hard=hard).astype(jnp.float32)
          * weights.astype(jnp.float32))
      out = gumbax.relaxed_bernoulli(key, logits, tau, hard=hard)
      assert out.dtype == logits.dtype
      assert _finite(out) and bool(jnp.all((out >= 0) & (out <= 1)))
      assert _finite(jax.grad(loss, argnums=(0, 1))(logits, tau))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conditional_samplers_finite(dtype):
  with _x64(dtype):
    logits = _logit_rows(dtype)
    masked = jnp.isneginf(logits)
    for seed in range(4):
      k1, k2 = jax.random.split(jax.random.key(seed))
      sample = gumbax.gumbel_max(k1, logits)
      assert not bool(jnp.any(jnp.where(masked, sample, 0)))

      def loss(l):
        z = gumbax.conditional_gumbel(k2, l, sample)
        return jnp.sum(jnp.where(masked, 0, z).astype(jnp.float32))

      z = gumbax.conditional_gumbel(k2, logits, sample)
      assert _finite(jnp.where(masked, 0, z))
      assert bool(jnp.all(jnp.where(masked, z == -jnp.inf, True)))
      assert _finite(jax.grad(loss)(logits))

      flat = jnp.where(masked, -float(jnp.finfo(dtype).max), logits)
      bits = jax.random.bernoulli(k1, 0.5, flat.shape).astype(dtype)
      zl = gumbax.conditional_logistic(k2, flat, bits)
      assert _finite(zl)
      assert bool(jnp.all((zl > 0) == (bits > 0)))
      assert _finite(jax.grad(lambda l: jnp.sum(
          gumbax.conditional_logistic(k2, l, bits).astype(jnp.float32)))(flat))


@pytest.mark.parametrize("dtype", DTYPES)
def test_densities_finite_on_samples(dtype):
  with _x64(dtype):
    # Moderate rows and masks. (With logits at the dtype's extremes the log-density
    # of a sample is itself below -finfo.max and correctly rounds to -inf.)
    logits = _logit_rows(dtype)[4:7]
    for temperature in TEMPERATURES:
      key = jax.random.key(0)
      x = gumbax.log_gumbel_softmax(key, logits, temperature)
      y = gumbax.gumbel_softmax(key, logits, temperature)
      for fn, s in ((gumbax.exp_concrete_log_prob, x), (gumbax.concrete_log_prob, y)):
        value, grads = jax.value_and_grad(
            lambda l, t: jnp.sum(fn(s, l, t)), argnums=(0, 1))(logits, temperature)
        assert _finite(value), (fn.__name__, dtype, temperature)
        assert _finite(grads), (fn.__name__, dtype, temperature)
      flat = logits[:2]
      yb = gumbax.relaxed_bernoulli(key, flat, temperature)
      value, grads = jax.value_and_grad(
          lambda l, t: jnp.sum(gumbax.binary_concrete_log_prob(yb, l, t)),
          argnums=(0, 1))(flat, temperature)
      assert _finite(value) and _finite(grads)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gumbel_noise_finite_and_cast_once(dtype):
  with _x64(dtype):
    g = gumbax.gumbel(jax.random.key(0), (200_000,), dtype)
    assert g.dtype == jnp.dtype(dtype)
    assert _finite(g)
    if dtype != "float64":
      # Same float32 noise, cast once: identical to casting the float32 draw.
      g32 = gumbax.gumbel(jax.random.key(0), (200_000,), jnp.float32)
      np.testing.assert_array_equal(np.asarray(g32.astype(dtype)), np.asarray(g))


def test_traced_nonpositive_temperature_is_the_hard_limit():
  logits = jnp.array([[0.3, -1.0, 2.0], [0.0, 0.0, -jnp.inf]])
  key = jax.random.key(4)
  hard = gumbax.gumbel_max(key, logits)
  for bad in (0.0, -1.0, jnp.nan):
    tau = jnp.array([bad, bad])
    y = jax.jit(gumbax.gumbel_softmax)(key, logits, tau)
    np.testing.assert_array_equal(y, hard)
    g = jax.grad(lambda l, t: jnp.sum(gumbax.gumbel_softmax(key, l, t) * jnp.arange(3.0)[None]),
                 argnums=(0, 1))(logits, tau)
    assert _finite(g)
    np.testing.assert_array_equal(g[1], 0.0)
    yb = jax.jit(gumbax.relaxed_bernoulli)(key, logits[0], jnp.array(bad))
    assert _finite(yb) and bool(jnp.all((yb == 0) | (yb == 1)))


def test_tiny_positive_temperatures_have_finite_gradients():
  logits = jnp.array([[0.3, -1.0, 2.0], [0.0, 0.1, -jnp.inf]])
  w = jnp.array([[1.0, -2.0, 0.5]])
  key = jax.random.key(0)
  for tau in (1e-20, 1e-12, 1e-9, 1e-6):
    g = jax.grad(lambda t: jnp.sum(gumbax.gumbel_softmax(key, logits, t) * w), )(tau)
    gl = jax.grad(lambda t: jnp.sum(gumbax.log_gumbel_softmax(key, logits, t) * w))(tau)
    gb = jax.grad(lambda t: jnp.sum(gumbax.relaxed_bernoulli(key, logits[0], t)))(tau)
    assert _finite((g, gl, gb)), tau


# ---- the relaxed samplers' own JVP: what reverse mode keeps, forward mode -------------


def _full_size_residuals(fn, logits):
  """Residual arrays of ``logits``' size that ``jax.vjp`` keeps for the backward pass."""
  _, pullback = jax.vjp(fn, logits)
  return [r for r in jax.tree.leaves(pullback) if np.size(r) == logits.size]


@pytest.mark.parametrize("name", ["gumbel_softmax", "gumbel_softmax_hard", "relaxed_bernoulli"])
def test_backward_pass_keeps_one_array(name):
  """The clamp needs no mask in the backward pass: one array of the logits' size.

  (Formerly ``jnp.maximum``'s tie mask, and ``jnp.clip``'s two masks, were kept too:
  8 more bytes per element in float32 to write and read back.)
  """
  key = jax.random.key(0)
  fn = {"gumbel_softmax": lambda l: gumbax.gumbel_softmax(key, l, 0.5),
        "gumbel_softmax_hard": lambda l: gumbax.gumbel_softmax(key, l, 0.5, hard=True),
        "relaxed_bernoulli": lambda l: gumbax.relaxed_bernoulli(key, l, 0.5)}[name]
  logits = jnp.asarray(np.linspace(-2.0, 2.0, 48, dtype=np.float32).reshape(6, 8))
  assert len(_full_size_residuals(fn, logits)) == 1


def test_forward_mode_matches_reverse_mode_with_masks_and_learned_temperature():
  key = jax.random.key(1)
  logits = jnp.array([[0.5, -jnp.inf, 1.0, -2.0], [3.0, 2.0, -jnp.inf, -jnp.inf],
                      [1e30, 0.0, -1e30, 2.0]], jnp.float32)
  tau = jnp.array([0.7, 0.05, 2.0], jnp.float32)
  for fn in (lambda l, t: gumbax.gumbel_softmax(key, l, t),
             lambda l, t: gumbax.straight_through(key, l, temperature=t),
             lambda l, t: gumbax.relaxed_bernoulli(key, l, t[:, None])):
    fwd = jax.jacfwd(fn, argnums=(0, 1))(logits, tau)
    rev = jax.jacrev(fn, argnums=(0, 1))(logits, tau)
    for a, b in zip(fwd, rev):
      assert np.all(np.isfinite(np.asarray(a))) and np.all(np.isfinite(np.asarray(b)))
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  # The masked entries get exactly zero sample and zero gradient.
  jac = jax.jacrev(lambda l: gumbax.gumbel_softmax(key, l, 0.7))(logits)
  assert np.all(np.asarray(jac)[:, :, 0, 1] == 0) and np.all(np.asarray(jac)[:, :, 1, 2:] == 0)


def test_gradients_match_the_textbook_formula():
  """Against ``jax.nn.softmax((logits + g) / tau)`` and the sigmoid with the same noise."""
  key = jax.random.key(2)
  logits = jnp.asarray(np.sin(np.arange(40.0)).reshape(5, 8) * 3, jnp.float32)
  tau = jnp.asarray(np.linspace(0.3, 2.0, 5), jnp.float32)
  g = jax.random.gumbel(key, logits.shape, jnp.float32, mode="low")
  noise = jax.random.logistic(key, logits.shape, jnp.float32)
  cot = jnp.asarray(np.cos(np.arange(40.0)).reshape(5, 8), jnp.float32)
  pairs = [
      (lambda l, t: gumbax.gumbel_softmax(key, l, t),
       lambda l, t: jax.nn.softmax((l + g) / t[:, None]), (logits + g) / tau[:, None]),
      (lambda l, t: gumbax.relaxed_bernoulli(key, l, t[:, None]),
       lambda l, t: jax.nn.sigmoid((l + noise) / t[:, None]), (logits + noise) / tau[:, None]),
  ]
  for ours, textbook, x in pairs:
    y1, pb1 = jax.vjp(ours, logits, tau)
    y2, pb2 = jax.vjp(textbook, logits, tau)
    # Two float32 formulas: the exponents differ by ulps of |x| = |l + g| / tau (~16),
    # a relative error of exp / sigmoid, so rtol grows with max|x| (it was 1e-5 ~ 5 ulps).
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y2),
                               rtol=max(1e-5, f32_tol(x, 8)), atol=1e-7)
    # The pullbacks sum y (cot - sum y cot) / tau (times x for tau) over the categories:
    # they cancel, so their rounding is ulps of those terms' magnitude S, not of the
    # result (the tau cotangent was off by 5e-7 = 28 eps32 * its max against atol 1e-6).
    y, xs, c = np.asarray(y2, np.float64), np.asarray(x, np.float64), np.abs(np.asarray(cot))
    terms = y * (c + np.sum(y * c, -1, keepdims=True)) / np.asarray(tau)[:, None]
    scales = (terms, np.sum(terms * np.abs(xs), -1))   # d/dlogits, d/dtau
    for a, b, scale in zip(pb1(cot), pb2(cot), scales):
      assert_f32_close(a, b, scale, ulps=16, rtol=1e-4)
