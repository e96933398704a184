"""API behaviour: jit/vmap/grad, key types, temperatures, straight-through, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import gumbax
from _tolerance import assert_f32_close, f32_tol

LOGITS = jnp.array([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -3.0, 0.2], [0.0, 0.0, 0.0, 0.0]])
SAMPLERS = {
    "gumbel_max": lambda k, l: gumbax.gumbel_max(k, l),
    "gumbel_top_k": lambda k, l: gumbax.gumbel_top_k(k, l, 2),
    "gumbel_softmax": lambda k, l: gumbax.gumbel_softmax(k, l, 0.7),
    "gumbel_softmax_hard": lambda k, l: gumbax.gumbel_softmax(k, l, 0.7, hard=True),
    "log_gumbel_softmax": lambda k, l: gumbax.log_gumbel_softmax(k, l, 0.7),
    "straight_through": lambda k, l: gumbax.straight_through(k, l),
    "straight_through_identity": lambda k, l: gumbax.straight_through(k, l, backward="identity"),
    "relaxed_bernoulli": lambda k, l: gumbax.relaxed_bernoulli(k, l, 0.7),
    "relaxed_bernoulli_hard": lambda k, l: gumbax.relaxed_bernoulli(k, l, 0.7, hard=True),
    "conditional_gumbel": lambda k, l: gumbax.conditional_gumbel(
        k, l, jax.nn.one_hot(jnp.argmax(l, -1), l.shape[-1])),
    "conditional_logistic": lambda k, l: gumbax.conditional_logistic(k, l, (l > 0) * 1.0),
    "gumbel": lambda k, l: gumbax.gumbel(k, l.shape),
}


def _same(actual, expected):
  """Discrete outputs must match exactly; float ones up to XLA fusion rounding.

  jit/vmap against eager reorders and fuses float32 work, so values agree up to a few
  ulps of their magnitude (log_gumbel_softmax's outputs are differences of scores of
  that size): atol = 16 eps32 * max(1, max|expected|) with rtol 2e-6."""
  assert actual.shape == expected.shape and actual.dtype == expected.dtype
  scale = max(1.0, float(np.max(np.abs(np.asarray(expected, np.float64)))))
  assert_f32_close(actual, expected, scale, ulps=16, rtol=2e-6)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_jit_vmap_and_key_types(name):
  fn = SAMPLERS[name]
  typed, legacy = jax.random.key(7), jax.random.PRNGKey(7)
  eager = fn(typed, LOGITS)
  _same(jax.jit(fn)(typed, LOGITS), eager)
  # Legacy uint32 keys give the same stream as the typed key with the same seed.
  _same(fn(legacy, LOGITS), eager)
  _same(jax.jit(fn)(legacy, LOGITS), eager)
  # vmap over keys, over logits, and over both.
  keys = jax.random.split(typed, 3)
  over_keys = jax.vmap(fn, in_axes=(0, None))(keys, LOGITS)
  for i in range(3):
    _same(over_keys[i], fn(keys[i], LOGITS))
  over_logits = jax.vmap(fn, in_axes=(None, 0))(typed, LOGITS)
  for i in range(3):
    _same(over_logits[i], fn(typed, LOGITS[i]))
  both = jax.jit(jax.vmap(fn))(keys, LOGITS)
  for i in range(3):
    _same(both[i], fn(keys[i], LOGITS[i]))


def test_no_retrace_when_key_changes():
  traces = []

  @jax.jit
  def f(key, logits):
    traces.append(1)
    return gumbax.gumbel_softmax(key, logits, 0.5, hard=True)

  for seed in range(5):
    f(jax.random.key(seed), LOGITS)
  assert len(traces) == 1


def test_hard_gumbel_softmax_is_gumbel_max_with_soft_gradient():
  key = jax.random.key(3)
  w = jax.random.normal(jax.random.key(4), LOGITS.shape)
  hard = gumbax.gumbel_softmax(key, LOGITS, 0.5, hard=True)
  np.testing.assert_array_equal(hard, gumbax.gumbel_max(key, LOGITS))
  g_hard = jax.grad(lambda l: jnp.sum(gumbax.gumbel_softmax(key, l, 0.5, hard=True) * w))(LOGITS)
  g_soft = jax.grad(lambda l: jnp.sum(gumbax.gumbel_softmax(key, l, 0.5) * w))(LOGITS)
  np.testing.assert_array_equal(g_hard, g_soft)


def test_hard_relaxed_bernoulli_is_exact_binary_with_soft_gradient():
  key = jax.random.key(3)
  logits = jnp.linspace(-3, 3, 11)
  hard = gumbax.relaxed_bernoulli(key, logits, 0.5, hard=True)
  assert set(np.unique(np.asarray(hard))) <= {0.0, 1.0}
  soft = gumbax.relaxed_bernoulli(key, logits, 0.5)
  np.testing.assert_array_equal(hard, (soft > 0.5).astype(hard.dtype))
  g_hard = jax.grad(lambda l: jnp.sum(gumbax.relaxed_bernoulli(key, l, 0.5, hard=True) ** 2))(logits)
  g_soft_at_hard = jax.grad(lambda l: jnp.sum(
      2 * jax.lax.stop_gradient(hard) * gumbax.relaxed_bernoulli(key, l, 0.5)))(logits)
  np.testing.assert_allclose(g_hard, g_soft_at_hard, rtol=1e-6)


def test_straight_through_gradient_is_softmax_gradient():
  key = jax.random.key(0)
  w = jax.random.normal(jax.random.key(1), LOGITS.shape)
  for tau in (1.0, 0.3):
    sample = gumbax.straight_through(key, LOGITS, temperature=tau)
    np.testing.assert_array_equal(sample, gumbax.gumbel_max(key, LOGITS))
    g = jax.grad(lambda l: jnp.sum(gumbax.straight_through(key, l, temperature=tau) * w))(LOGITS)
    expected = jax.grad(lambda l: jnp.sum(jax.nn.softmax(l / tau) * w))(LOGITS)
    # gumbax's softmax JVP against jax.nn.softmax's: y (w - sum y w) / tau cancels when
    # y ~ 1, so its rounding is absolute, ~eps32 * max|w| / tau (atol was 1e-7).
    assert_f32_close(g, expected, np.max(np.abs(w)) / tau, ulps=16, rtol=1e-5)


def test_straight_through_identity_passes_the_gradient_unchanged():
  """``backward="identity"``: the same forward sample, Jacobian ``I / temperature``."""
  key = jax.random.key(0)
  w = jax.random.normal(jax.random.key(1), LOGITS.shape)
  for tau in (1.0, 0.3, jnp.array([0.5, 1.0, 2.0])):
    fn = lambda l: gumbax.straight_through(key, l, temperature=tau, backward="identity")
    np.testing.assert_array_equal(fn(LOGITS), gumbax.gumbel_max(key, LOGITS))
    g = jax.grad(lambda l: jnp.sum(fn(l) * w))(LOGITS)
    np.testing.assert_allclose(g, w / jnp.reshape(jnp.asarray(tau), (-1, 1)), rtol=1e-6)
  # The category axis elsewhere: the per-row temperature follows the batch axis.
  tau = jnp.array([0.5, 1.0, 2.0])
  g = jax.grad(lambda l: jnp.sum(gumbax.straight_through(
      key, l, temperature=tau, axis=0, backward="identity") * w.T))(LOGITS.T)
  np.testing.assert_allclose(g, (w / tau[:, None]).T, rtol=1e-6)
  # The default is the softmax's backward pass, unchanged.
  g_default = jax.grad(lambda l: jnp.sum(gumbax.straight_through(key, l) * w))(LOGITS)
  g_softmax = jax.grad(lambda l: jnp.sum(
      gumbax.straight_through(key, l, backward="softmax") * w))(LOGITS)
  np.testing.assert_array_equal(g_default, g_softmax)


def test_gumbel_softmax_matches_textbook_formula():
  key = jax.random.key(5)
  g = gumbax.gumbel(key, LOGITS.shape)
  for tau in (0.1, 1.0, 5.0):
    # gumbax computes (s - max s) * (1 / tau), the reference s / tau - max: the exponents
    # differ by ulps of |s| / tau (up to ~50 at tau = 0.1), which is a *relative* error of
    # exp's output and an absolute one of the log-softmax.
    x = (LOGITS + g) / tau
    expected = jax.nn.softmax(x)
    np.testing.assert_allclose(gumbax.gumbel_softmax(key, LOGITS, tau), expected,
                               rtol=max(1e-5, f32_tol(x, 8)), atol=1e-7)
    expected_log = jax.nn.log_softmax(x)
    assert_f32_close(gumbax.log_gumbel_softmax(key, LOGITS, tau), expected_log, x, ulps=16,
                     rtol=1e-5)
  noise = jax.random.logistic(key, LOGITS.shape)
  # sigmoid(z * (1 / tau)) against sigmoid(z / tau): ulps of |z| / tau become sigmoid's
  # relative error (it is ~exp(x) for x << 0), so rtol = 8 eps32 * max|z / tau|.
  x = (LOGITS + noise) / 0.3
  np.testing.assert_allclose(gumbax.relaxed_bernoulli(key, LOGITS, 0.3), jax.nn.sigmoid(x),
                             rtol=max(1e-6, f32_tol(x, 8)))


def test_axis_argument_is_a_transpose():
  key = jax.random.key(2)
  for fn in (lambda l, a: gumbax.gumbel_softmax(key, l, 0.5, axis=a),
             lambda l, a: gumbax.log_gumbel_softmax(key, l, 0.5, axis=a),
             lambda l, a: gumbax.gumbel_max(key, l, axis=a)):
    # Same noise layout requires the same shape, so compare sums over the axis and
    # one-hotness rather than values.
    out = fn(LOGITS.T, 0)
    assert out.shape == LOGITS.T.shape
  y = gumbax.gumbel_softmax(key, LOGITS.T, 0.5, axis=0)
  np.testing.assert_allclose(jnp.sum(y, axis=0), 1.0, rtol=1e-6)
  b = gumbax.gumbel_max(key, LOGITS.T, axis=0)
  np.testing.assert_array_equal(jnp.sum(b, axis=0), 1.0)
  idx = gumbax.gumbel_top_k(key, LOGITS.T, 3, axis=0)
  assert idx.shape == (3, 3) and idx.dtype == jnp.int32


@pytest.mark.parametrize("shape", [(), (5,), (3, 1), (1, 5), (3, 5)])
def test_batched_temperature_equals_per_example(shape):
  logits = jax.random.normal(jax.random.key(0), (3, 5, 4))
  tau = jnp.exp(jax.random.normal(jax.random.key(1), shape)) if shape else jnp.array(0.6)
  key = jax.random.key(2)
  y = gumbax.gumbel_softmax(key, logits, tau)
  full = jnp.broadcast_to(tau, (3, 5))
  g = gumbax.gumbel(key, logits.shape)
  x = (logits + g) / full[..., None]
  expected = jax.nn.softmax(x)
  # As in test_gumbel_softmax_matches_textbook_formula: ulps of the tempered scores are
  # relative errors of exp / sigmoid, so rtol grows with max|x| (tau can be ~0.1 here).
  np.testing.assert_allclose(y, expected, rtol=max(1e-5, f32_tol(x, 8)), atol=1e-7)
  yb = gumbax.relaxed_bernoulli(key, logits[..., 0], tau)
  noise = jax.random.logistic(key, (3, 5))
  xb = (logits[..., 0] + noise) / full
  np.testing.assert_allclose(yb, jax.nn.sigmoid(xb), rtol=max(1e-6, f32_tol(xb, 8)))


def test_check_grads_with_fixed_key():
  key = jax.random.key(11)
  logits = jax.random.normal(jax.random.key(1), (2, 3, 4), jnp.float32)
  tau = jnp.array([[0.7, 1.3, 2.0], [0.9, 1.1, 0.8]])
  w = jax.random.normal(jax.random.key(2), logits.shape)
  with jax.enable_x64(True):
    l64, t64, w64 = (x.astype(jnp.float64) for x in (logits, tau, w))
    gs = lambda l, t: jnp.sum(gumbax.gumbel_softmax(key, l, t) * w64)
    lgs = lambda l, t: jnp.sum(gumbax.log_gumbel_softmax(key, l, t) * w64)
    rb = lambda l, t: jnp.sum(gumbax.relaxed_bernoulli(key, l, t[..., None]) * w64)
    for f in (gs, lgs, rb):
      check_grads(f, (l64, t64), order=1, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6)
    cg = lambda l: jnp.sum(gumbax.conditional_gumbel(
        key, l, jax.nn.one_hot(jnp.argmax(l64, -1), 4)) * w64)
    check_grads(cg, (l64,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
    cl = lambda l: jnp.sum(gumbax.conditional_logistic(key, l, (l64 > 0) * 1.0) * w64)
    check_grads(cl, (l64,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_float64_noise_is_drawn_in_float64():
  with jax.enable_x64(True):
    g = gumbax.gumbel(jax.random.key(0), (1000,), jnp.float64)
    assert g.dtype == jnp.float64
    # float64 noise is not float32 noise upcast: some values need more than 24 bits.
    assert bool(jnp.any(g != g.astype(jnp.float32).astype(jnp.float64)))
    y = gumbax.gumbel_softmax(jax.random.key(0), jnp.zeros((5, 3), jnp.float64), 0.5)
    assert y.dtype == jnp.float64


# ----------------------------------------------------------------------------
# Bad input.

KEY = jax.random.key(0)


@pytest.mark.parametrize("call, exc, words", [
    (lambda: gumbax.gumbel_softmax(KEY, LOGITS, axis=2), ValueError, ["axis", "2", "[-2, 1]"]),
    (lambda: gumbax.gumbel_max(KEY, LOGITS, axis=-3), ValueError, ["axis", "-3"]),
    (lambda: gumbax.gumbel_softmax(KEY, LOGITS, axis=0.5), TypeError, ["axis", "0.5"]),
    (lambda: gumbax.gumbel_softmax(KEY, jnp.array(1.0)), ValueError, ["logits", "scalar"]),
    (lambda: gumbax.gumbel_softmax(KEY, jnp.arange(3)), TypeError, ["logits", "int32"]),
    (lambda: gumbax.relaxed_bernoulli(KEY, jnp.arange(3)), TypeError, ["logits", "int32"]),
    (lambda: gumbax.gumbel_top_k(KEY, LOGITS, 5), ValueError, ["k", "5", "4"]),
    (lambda: gumbax.gumbel_top_k(KEY, LOGITS, 0), ValueError, ["k", "0"]),
    (lambda: gumbax.gumbel_top_k(KEY, LOGITS, 2.0), TypeError, ["k", "2.0"]),
    (lambda: gumbax.conditional_gumbel(KEY, LOGITS, jnp.ones((3, 3))), ValueError,
     ["sample", "(3, 3)", "(3, 4)"]),
    (lambda: gumbax.conditional_logistic(KEY, LOGITS, jnp.ones(4)), ValueError,
     ["sample", "(4,)", "(3, 4)"]),
    (lambda: gumbax.gumbel_softmax(KEY, LOGITS, 0.0), ValueError, ["temperature", "> 0", "0.0"]),
    (lambda: gumbax.gumbel_softmax(KEY, LOGITS, -1), ValueError, ["temperature", "-1"]),
    (lambda: gumbax.relaxed_bernoulli(KEY, LOGITS, np.array([1.0, 0.0, 2.0, 1.0])), ValueError,
     ["temperature", "0."]),
    (lambda: gumbax.straight_through(KEY, LOGITS, temperature=0), ValueError, ["temperature"]),
    (lambda: gumbax.straight_through(KEY, LOGITS, backward="linear"), ValueError,
     ["backward", "softmax", "identity", "linear"]),
    (lambda: gumbax.gumbel_softmax(KEY, LOGITS, jnp.ones(4)), ValueError,
     ["temperature", "(4,)", "(3,)"]),
    (lambda: gumbax.gumbel_softmax(KEY, LOGITS, jnp.ones((2, 3))), ValueError,
     ["temperature", "(2, 3)"]),
    (lambda: gumbax.gumbel_softmax(KEY, LOGITS, True), TypeError, ["temperature", "bool"]),
    (lambda: gumbax.gumbel(KEY, (3,), jnp.int32), TypeError, ["dtype", "int32"]),
])
def test_bad_input_errors_name_the_argument(call, exc, words):
  with pytest.raises(exc) as info:
    call()
  for word in words:
    assert word in str(info.value), (word, str(info.value))


def test_public_api_is_explicit():
  assert sorted(gumbax.__all__) == gumbax.__all__
  for name in gumbax.__all__:
    fn = getattr(gumbax, name)
    if not callable(fn):          # the subpackages gumbax.estimators, gumbax.diagnostics
      assert fn.__doc__ and fn.__all__, name
      continue
    assert fn.__doc__ and "References:" in fn.__doc__ and "Example:" in fn.__doc__, name
