"""Experimental variants timed beside gumbax in ``fwd_bwd.py`` (not library code).

``lean``: the same samples as :func:`gumbax.gumbel_softmax` /
:func:`gumbax.relaxed_bernoulli` for a fixed Python temperature, with a
``jax.custom_vjp`` whose only residual is the sample rounded to the logits' dtype
(the soft sample for ``hard=True``). gumbax's library functions also support
learnable temperatures and forward-mode differentiation; since this round they too
keep a single array for the backward pass (their own JVP passes the clamp through,
so no clamp mask is saved), but in the compute dtype: float32 for bfloat16 logits,
so the soft bfloat16 sampler moves 16 bytes per element where this prototype moves
10 (in float32 both move 20, and 24 with ``hard=True``, which keeps the soft sample
beside the one-hot output). This module measures, on a GPU, what the remaining
difference would gain; the tests check that it computes the same values and
gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_FLOOR = 1e30  # gumbax._checks.SCORE_FLOOR


def lean_gumbel_softmax(key, logits, tau: float, hard: bool = False):
  """``gumbax.gumbel_softmax(key, logits, tau, hard=hard)`` (last axis, Python tau)."""
  dtype = logits.dtype

  @jax.custom_vjp
  def sample(l):
    return forward(l)[0]

  def forward(l):
    scores = l.astype(jnp.float32) + jax.random.gumbel(key, l.shape, jnp.float32, mode="low")
    shift = jnp.max(scores, axis=-1, keepdims=True)
    e = jnp.exp(jnp.maximum(scores - shift, -_FLOOR) * (1.0 / tau))
    y = (e / jnp.sum(e, axis=-1, keepdims=True)).astype(dtype)
    if not hard:
      return y, y
    one_hot = jax.nn.one_hot(jnp.argmax(scores, -1), l.shape[-1], dtype=dtype)
    return one_hot, y

  def backward(y, cotangent):
    y, c = y.astype(jnp.float32), cotangent.astype(jnp.float32)
    g = y * (c - jnp.sum(y * c, axis=-1, keepdims=True)) * (1.0 / tau)
    return (g.astype(dtype),)

  sample.defvjp(forward, backward)
  return sample(logits)


def lean_relaxed_bernoulli(key, logits, tau: float):
  """``gumbax.relaxed_bernoulli(key, logits, tau)`` for a Python tau."""
  dtype = logits.dtype

  @jax.custom_vjp
  def sample(l):
    return forward(l)[0]

  def forward(l):
    z = l.astype(jnp.float32) + jax.random.logistic(key, l.shape, jnp.float32)
    y = jax.nn.sigmoid(z * (1.0 / tau)).astype(dtype)  # as gumbax: the clip changes no value
    return y, y

  def backward(y, cotangent):
    y = y.astype(jnp.float32)
    return ((cotangent.astype(jnp.float32) * y * (1.0 - y) * (1.0 / tau)).astype(dtype),)

  sample.defvjp(forward, backward)
  return sample(logits)


def lean_fn(name: str, tau: float):
  if name == "gumbel_softmax":
    return functools.partial(lean_gumbel_softmax, tau=tau)
  if name == "gumbel_softmax_hard":
    return functools.partial(lean_gumbel_softmax, tau=tau, hard=True)
  return functools.partial(lean_relaxed_bernoulli, tau=tau)
