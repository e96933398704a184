"""Tests for the closed-form KL divergences and entropies (``gumbax.categorical_kl``,
``bernoulli_kl``, ``categorical_entropy``, ``bernoulli_entropy``).

References are float64 NumPy sums over the outcomes (exact enumeration), never the
library's formula; float32 results are compared with a tolerance sized from the
terms' magnitude (``tests/_tolerance.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import gumbax
from tests._tolerance import assert_f32_close

categorical_kl = jax.jit(gumbax.categorical_kl, static_argnames=("axis",))
bernoulli_kl = jax.jit(gumbax.bernoulli_kl)
RNG = np.random.default_rng(0)


def numpy_categorical_kl(logits, prior, axis=-1):
  """``sum_k q_k log(q_k / p_k)`` over the outcomes with ``q_k > 0``, float64."""
  q = special.softmax(np.asarray(logits, np.float64), axis)
  p = special.softmax(np.asarray(prior, np.float64), axis)
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.where(q > 0, q * (np.log(q) - np.log(p)), 0.0)
    sizes = np.where(q > 0, q * (np.abs(np.log(q)) + np.abs(np.log(p))), 0.0)
  return terms.sum(axis), sizes.sum(axis)


def numpy_bernoulli_kl(logits, prior):
  """The two-outcome sum for ``q = sigmoid(logits)``, ``p = sigmoid(prior)``, float64."""
  logits, prior = np.broadcast_arrays(np.asarray(logits, np.float64), np.asarray(prior, np.float64))
  q, p = special.expit(logits), special.expit(prior)
  out, scale = np.zeros(q.shape), np.zeros(q.shape)
  for qo, po in ((q, p), (1 - q, 1 - p)):
    with np.errstate(divide="ignore", invalid="ignore"):
      term = np.where(qo > 0, qo * (np.log(qo) - np.log(po)), 0.0)
      size = np.where(qo > 0, qo * (np.abs(np.log(qo)) + np.abs(np.log(po))), 0.0)
    out, scale = out + term, scale + size
  return out, scale


@pytest.mark.parametrize("shape,prior_shape", [((5, 4), (5, 4)), ((6, 3, 7), (3, 7)),
                                               ((2, 3), (3,))])
def test_categorical_kl_matches_enumeration(shape, prior_shape):
  logits = (3 * RNG.normal(size=shape)).astype(np.float32)
  prior = RNG.normal(size=prior_shape).astype(np.float32)
  want, scale = numpy_categorical_kl(logits, prior)
  got = categorical_kl(logits, prior)
  assert got.shape == shape[:-1] and got.dtype == jnp.float32
  assert_f32_close(got, want, scale, ulps=32, rtol=1e-5)
  assert np.all(np.asarray(got) >= -1e-6)


def test_categorical_kl_of_a_distribution_to_itself_is_zero_and_axis_works():
  logits = RNG.normal(size=(4, 6)).astype(np.float32)
  assert_f32_close(categorical_kl(logits, logits), np.zeros(4), np.abs(logits).max(), ulps=32)
  prior = RNG.normal(size=(4, 6)).astype(np.float32)
  np.testing.assert_array_equal(categorical_kl(logits.T, prior.T, axis=0),
                                categorical_kl(logits, prior))


def test_categorical_kl_masked_categories_are_left_out():
  """A masked category (``-inf``) is a smaller categorical: the KL of the unmasked
  ones, finite, with a finite gradient that is zero at the masked logit."""
  logits = jnp.array([[0.5, -jnp.inf, 1.0, -2.0], [-jnp.inf, 0.0, 3.0, -jnp.inf]])
  prior = jnp.array([[0.0, 0.0, 0.3, 1.0], [-jnp.inf, 1.0, 0.0, 2.0]])
  got = categorical_kl(logits, prior)
  for row in range(2):
    want, scale = numpy_categorical_kl(logits[row], prior[row])  # skips q_k = 0
    assert np.isfinite(got[row])
    assert_f32_close(got[row], want, scale, ulps=32, rtol=1e-5)
  grad = jax.jit(jax.grad(lambda l, p: gumbax.categorical_kl(l, p).sum(), argnums=(0, 1)))(
      logits, prior)
  for g in grad:
    assert np.all(np.isfinite(g))
  assert np.all(np.asarray(grad[0])[~np.isfinite(np.asarray(logits))] == 0)


def test_categorical_kl_gradient_matches_closed_form():
  """d KL / d logits = q (log q - log p - KL) (float64 reference)."""
  logits = RNG.normal(size=(3, 5)).astype(np.float32)
  prior = RNG.normal(size=(3, 5)).astype(np.float32)
  q = special.softmax(logits.astype(np.float64), -1)
  log_ratio = np.log(q) - special.log_softmax(prior.astype(np.float64), -1)
  kl = np.sum(q * log_ratio, -1, keepdims=True)
  grad = jax.jit(jax.grad(lambda l: gumbax.categorical_kl(l, prior).sum()))(logits)
  assert_f32_close(grad, q * (log_ratio - kl), np.abs(log_ratio).max() + 1, ulps=32, rtol=1e-5)


@pytest.mark.parametrize("shape", [(7,), (3, 5)])
def test_bernoulli_kl_matches_enumeration(shape):
  logits = (4 * RNG.normal(size=shape)).astype(np.float32)
  prior = RNG.normal(size=shape[-1:]).astype(np.float32)
  want, scale = numpy_bernoulli_kl(logits, prior)
  got = bernoulli_kl(logits, prior)
  assert got.shape == shape and got.dtype == jnp.float32
  assert_f32_close(got, want, scale, ulps=32, rtol=1e-5)


def test_bernoulli_kl_is_the_two_category_kl():
  logits = (3 * RNG.normal(size=(10,))).astype(np.float32)
  prior = RNG.normal(size=(10,)).astype(np.float32)
  pair = lambda l: np.stack([np.zeros_like(l), l], -1)
  _, scale = numpy_bernoulli_kl(logits, prior)
  assert_f32_close(bernoulli_kl(logits, prior), categorical_kl(pair(logits), pair(prior)),
                   scale, ulps=32, rtol=1e-5)


def test_entropies_match_enumeration_and_masked_categories_give_zero_terms():
  logits = (2 * RNG.normal(size=(3, 5))).astype(np.float32)
  q = special.softmax(logits.astype(np.float64), -1)
  scale = np.sum(q * np.abs(np.log(q)), -1)
  assert_f32_close(gumbax.categorical_entropy(logits), -np.sum(q * np.log(q), -1), scale,
                   ulps=32, rtol=1e-5)
  masked = logits.copy()
  masked[:, 0] = -np.inf
  q = special.softmax(logits[:, 1:].astype(np.float64), -1)
  got = jax.jit(gumbax.categorical_entropy)(masked)
  assert_f32_close(got, -np.sum(q * np.log(q), -1), scale, ulps=32, rtol=1e-5)
  assert np.all(np.isfinite(jax.grad(lambda l: gumbax.categorical_entropy(l).sum())(masked)))
  b = logits[:, 0]
  p = special.expit(b.astype(np.float64))
  want = -(p * np.log(p) + (1 - p) * np.log1p(-p))
  assert_f32_close(jax.jit(gumbax.bernoulli_entropy)(b), want, np.abs(b).max() + 1, ulps=32)


def test_jit_and_vmap_match_eager():
  logits = RNG.normal(size=(4, 3, 5)).astype(np.float32)
  prior = RNG.normal(size=(3, 5)).astype(np.float32)
  _, scale = numpy_categorical_kl(logits, prior)
  eager = gumbax.categorical_kl(logits, prior)
  mapped = jax.jit(jax.vmap(gumbax.categorical_kl, in_axes=(0, None)))(logits, prior)
  assert_f32_close(categorical_kl(logits, prior), eager, scale, ulps=32)
  assert_f32_close(mapped, eager, scale, ulps=32)
  b_logits, b_prior = logits[..., 0], prior[..., 0]
  _, scale = numpy_bernoulli_kl(b_logits, b_prior)
  eager = gumbax.bernoulli_kl(b_logits, b_prior)
  mapped = jax.jit(jax.vmap(gumbax.bernoulli_kl, in_axes=(0, None)))(b_logits, b_prior)
  assert_f32_close(bernoulli_kl(b_logits, b_prior), eager, scale, ulps=32)
  assert_f32_close(mapped, eager, scale, ulps=32)


def test_bfloat16_inputs_are_computed_in_float32():
  logits = jnp.asarray(RNG.normal(size=(2, 4)), jnp.bfloat16)
  assert categorical_kl(logits, jnp.zeros(4, jnp.bfloat16)).dtype == jnp.float32
  assert bernoulli_kl(logits, jnp.zeros(4, jnp.bfloat16)).dtype == jnp.float32
  assert gumbax.categorical_entropy(logits).dtype == jnp.float32


def test_unmasked_form_agrees_on_finite_logits():
  logits = (3 * RNG.normal(size=(4, 3, 5))).astype(np.float32)
  prior = RNG.normal(size=(3, 5)).astype(np.float32)
  _, scale = numpy_categorical_kl(logits, prior)
  plain = jax.jit(lambda l, p: gumbax.categorical_kl(l, p, masked=False))(logits, prior)
  assert_f32_close(plain, categorical_kl(logits, prior), scale, ulps=32)
  q = special.softmax(logits.astype(np.float64), -1)
  entropy = jax.jit(lambda l: gumbax.categorical_entropy(l, masked=False))(logits)
  assert_f32_close(entropy, -np.sum(q * np.log(q), -1), np.sum(q * np.abs(np.log(q)), -1),
                   ulps=32, rtol=1e-5)


@pytest.mark.parametrize("call,exc,words", [
    (lambda: gumbax.categorical_kl(jnp.zeros(3), jnp.zeros(3), masked=1), TypeError,
     ["masked"]),
    (lambda: gumbax.categorical_entropy(jnp.zeros(3, jnp.int32)), TypeError,
     ["logits", "floating"]),
    (lambda: gumbax.categorical_kl(jnp.zeros((2, 3), jnp.int32), jnp.zeros(3)), TypeError,
     ["logits", "floating"]),
    (lambda: gumbax.categorical_kl(jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32)), TypeError,
     ["prior_logits", "floating"]),
    (lambda: gumbax.categorical_kl(jnp.zeros((2, 3)), jnp.zeros(4)), ValueError,
     ["(2, 3)", "(4,)", "broadcast"]),
    (lambda: gumbax.categorical_kl(jnp.zeros((2, 3)), jnp.zeros(3), axis=2), ValueError,
     ["axis"]),
    (lambda: gumbax.categorical_kl(jnp.zeros((2, 3)), jnp.zeros(3), axis=1.0), TypeError,
     ["axis"]),
    (lambda: gumbax.bernoulli_kl(jnp.zeros(3, jnp.int32), jnp.zeros(3)), TypeError,
     ["logits", "floating"]),
    (lambda: gumbax.bernoulli_kl(jnp.zeros(3), jnp.zeros(2)), ValueError,
     ["(3,)", "(2,)", "broadcast"]),
])
def test_bad_input(call, exc, words):
  with pytest.raises(exc) as info:
    call()
  for word in words:
    assert word in str(info.value), (word, str(info.value))
