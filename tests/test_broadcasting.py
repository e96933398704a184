"""The densities broadcast their value, logits and temperature like NumPy arrays.

TFP's convention (a batch of values against one distribution, one value against a
batch of distributions, batched temperatures) and PyTorch's
(``Distribution.log_prob(value)`` with ``value.shape == sample_shape + batch_shape +
event_shape``) are both plain NumPy broadcasting followed, for the categorical
densities, by a reduction over the category axis. Every case is checked against the
explicit loop over the broadcast batch, each element computed by the unbroadcast call
on one row (categorical) or one scalar (binary), eagerly and under jit and vmap.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gumbax
from _tolerance import assert_f32_close

CATEGORICAL = ["concrete_log_prob", "exp_concrete_log_prob"]
BINARY = ["binary_concrete_log_prob", "binary_concrete_logit_log_prob"]
K = 3


def _rng(seed):
  return np.random.default_rng(seed)


def _simplex(seed, shape):
  """Points of the simplex along the last axis (Dirichlet(1.5)), float32."""
  return _rng(seed).dirichlet(np.full(shape[-1], 1.5), shape[:-1]).astype(np.float32)


def _value(name, seed, shape):
  """A valid value for density ``name``: simplex / its log / (0, 1) / a logit."""
  if name == "concrete_log_prob":
    return _simplex(seed, shape)
  if name == "exp_concrete_log_prob":
    return np.log(_simplex(seed, shape))
  u = _rng(seed).uniform(0.05, 0.95, shape).astype(np.float32)
  return u if name == "binary_concrete_log_prob" else np.log(u / (1 - u)) * 2.0


def _logits(seed, shape):
  return _rng(seed).normal(0.0, 1.5, shape).astype(np.float32)


def _tau(seed, shape):
  return _rng(seed).uniform(0.3, 2.0, shape).astype(np.float32)


def _loop(name, value, logits, tau, axis=-1):
  """The reference: one unbroadcast call per element of the broadcast batch."""
  fn = getattr(gumbax, name)
  tau = np.asarray(tau, np.float32)
  if name in BINARY:
    shape = np.broadcast_shapes(value.shape, logits.shape, tau.shape)
    v, l, t = (np.broadcast_to(a, shape) for a in (value, logits, tau))
    out = np.empty(shape, np.float32)
    for i in np.ndindex(shape):
      out[i] = fn(v[i], l[i], float(t[i]))
    return out
  value, logits = np.moveaxis(value, axis, -1), np.moveaxis(logits, axis, -1)
  shape = np.broadcast_shapes(value.shape, logits.shape)
  batch = np.broadcast_shapes(shape[:-1], tau.shape)
  full = batch + shape[-1:]
  v, l = np.broadcast_to(value, full), np.broadcast_to(logits, full)
  t = np.broadcast_to(tau, batch)
  out = np.empty(batch, np.float32)
  for i in np.ndindex(batch):
    out[i] = fn(v[i], l[i], float(t[i]))
  return out


def _check(got, want):
  """Broadcast vs per-row: the same float32 arithmetic up to reduction order and
  fusion, so a few ulps of the terms' size (log-densities here are sums of terms of
  size at most ~|result| + 10)."""
  got = np.asarray(got)
  assert got.shape == want.shape, (got.shape, want.shape)
  assert_f32_close(got, want, 10.0 + np.abs(want), ulps=16, rtol=2e-6)


# (value shape, logits shape, temperature shape) for the categorical densities (K last).
CATEGORICAL_CASES = {
    # TFP: a batch of values against one distribution.
    "values_batch_vs_one_dist": ((5, K), (K,), ()),
    # TFP: one value against a batch of distributions.
    "one_value_vs_dist_batch": ((K,), (4, K), ()),
    # TFP: a batch of temperatures (the distribution's batch shape comes from it).
    "temperature_batch": ((K,), (K,), (4,)),
    "temperature_batch_and_logits_batch": ((K,), (4, K), (4,)),
    "temperature_adds_a_leading_dim": ((2, K), (K,), (5, 1)),
    # PyTorch: value sample_shape + batch_shape + event_shape, per-batch temperature.
    "torch_sample_batch_event": ((6, 4, K), (4, K), (4,)),
    "torch_two_sample_dims": ((2, 3, 4, K), (4, K), ()),
    # Size-1 dimensions on both sides.
    "outer_product": ((5, 1, K), (1, 4, K), (1, 4)),
}


@pytest.mark.parametrize("name", CATEGORICAL)
@pytest.mark.parametrize("case", sorted(CATEGORICAL_CASES))
def test_categorical_broadcasting_matches_the_loop(name, case):
  vshape, lshape, tshape = CATEGORICAL_CASES[case]
  value, logits, tau = _value(name, 1, vshape), _logits(2, lshape), _tau(3, tshape)
  want = _loop(name, value, logits, tau)
  fn = getattr(gumbax, name)
  _check(fn(value, logits, tau), want)
  _check(jax.jit(fn)(value, logits, tau), want)
  _check(fn(jnp.asarray(value), jnp.asarray(logits), jnp.asarray(tau)), want)


@pytest.mark.parametrize("name", CATEGORICAL)
def test_categorical_broadcasting_under_vmap(name):
  """vmap over a batch of values against unbatched logits of a different rank, and
  over a batch of logits against one value."""
  fn = getattr(gumbax, name)
  values, logits, tau = _value(name, 4, (6, 2, K)), _logits(5, (K,)), _tau(6, (2,))
  got = jax.vmap(fn, in_axes=(0, None, None))(values, logits, tau)
  _check(got, _loop(name, values, logits, tau))
  logits_b = _logits(7, (5, 2, K))
  got = jax.jit(jax.vmap(fn, in_axes=(None, 0, None)))(values[0, 0], logits_b, tau)
  _check(got, _loop(name, values[0, 0], logits_b, tau))


@pytest.mark.parametrize("name", CATEGORICAL)
def test_categorical_broadcasting_with_another_category_axis(name):
  """``axis`` indexes the broadcast shape: categories first, batches broadcast."""
  fn = getattr(gumbax, name)
  value, logits, tau = _value(name, 8, (5, K)).T, _logits(9, (K, 1)), _tau(10, (5,))
  want = _loop(name, value, logits, tau, axis=0)
  _check(fn(value, logits, tau, axis=0), want)
  _check(jax.jit(fn, static_argnames="axis")(value, logits, tau, axis=0), want)


@pytest.mark.parametrize("name", CATEGORICAL)
def test_categorical_masked_logits_broadcast(name):
  """A masked category in one distribution against a batch of values."""
  fn = getattr(gumbax, name)
  logits = _logits(11, (K,))
  logits[1] = -np.inf
  value = _value(name, 12, (4, K))
  got = np.asarray(fn(value, logits, 0.7))
  want = _loop(name, value, logits, 0.7)
  assert np.all(np.isfinite(got))
  _check(got, want)


# (value shape, logits shape, temperature shape) for the elementwise densities.
BINARY_CASES = {
    "values_batch_vs_one_dist": ((5, 4), (4,), ()),
    "one_value_vs_dist_batch": ((4,), (3, 4), ()),
    "scalar_value": ((), (3, 4), (4,)),
    "temperature_batch": ((4,), (4,), (3, 1)),
    "torch_sample_batch": ((6, 3, 4), (3, 4), (3, 4)),
    "outer_product": ((5, 1), (1, 4), (5, 4)),
}


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("case", sorted(BINARY_CASES))
def test_binary_broadcasting_matches_the_loop(name, case):
  vshape, lshape, tshape = BINARY_CASES[case]
  value, logits, tau = _value(name, 13, vshape), _logits(14, lshape), _tau(15, tshape)
  want = _loop(name, value, logits, tau)
  fn = getattr(gumbax, name)
  _check(fn(value, logits, tau), want)
  _check(jax.jit(fn)(value, logits, tau), want)
  got = jax.vmap(fn, in_axes=(0, None, None))(
      np.broadcast_to(value, (2,) + np.shape(value)), logits, tau)
  _check(got[1], want)


@pytest.mark.parametrize("name", CATEGORICAL + BINARY)
def test_shapes_that_do_not_broadcast_are_refused_naming_both(name):
  fn = getattr(gumbax, name)
  sample = "y" if name in ("concrete_log_prob", "binary_concrete_log_prob") else "x"
  value, logits = _value(name, 16, (2, K)), _logits(17, (4, K))
  for call in (fn, jax.jit(fn)):
    with pytest.raises(ValueError) as info:
      call(value, logits, 0.5)
    message = str(info.value)
    for word in (f"`{sample}`", "(2, 3)", "`logits`", "(4, 3)", "broadcast"):
      assert word in message, (word, message)
  # A temperature that broadcasts against neither.
  with pytest.raises(ValueError) as info:
    fn(value, logits[:2], np.ones(5, np.float32))
  message = str(info.value)
  assert "`temperature`" in message and "(5,)" in message, message
