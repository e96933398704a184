"""Gumbel noise, its density and CDF, Gumbel-max, Gumbel-top-k and conditional Gumbels.

All samplers draw their noise in float32 (float64 for float64 inputs) whatever the
output dtype and cast once at the end, so no sample is ever infinite or NaN (for
categorical logits: none from a row with at least one unmasked, NaN-free category;
see :func:`gumbel_max` for degenerate rows).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from gumbax import _checks
from gumbax import _noise

__all__ = [
    "conditional_gumbel",
    "conditional_logistic",
    "gumbel",
    "gumbel_cdf",
    "gumbel_log_prob",
    "gumbel_max",
    "gumbel_top_k",
]


def _uniform_open(key: ArrayLike, shape: tuple[int, ...], dtype: np.dtype) -> jax.Array:
  """Uniform noise on [tiny, 1 - eps]: strictly inside (0, 1), so logs are finite."""
  return _noise.draw(jax.random.uniform, key, shape, dtype, minval=jnp.finfo(dtype).tiny,
                     maxval=1.0)


def gumbel(key: ArrayLike, shape: Any = (), dtype: DTypeLike = jnp.float32) -> jax.Array:
  """Draws standard Gumbel(0, 1) noise.

  The noise is computed in float32 (float64 when ``dtype`` is float64) as
  ``-log(-log(u))`` with ``u`` uniform on ``[tiny, 1)`` and cast once to ``dtype``,
  so every value is finite in every dtype. In float32 the support is about
  ``[-4.5, 15.9]``; the truncated upper tail has probability about 1.2e-7.

  Args:
    key: a PRNG key (``jax.random.key`` or a legacy uint32 key).
    shape: output shape.
    dtype: a floating-point output dtype.

  Returns:
    An array of ``shape`` and ``dtype``.

  Example:
    >>> g = gumbax.gumbel(jax.random.key(0), (3,))
    >>> g.shape, g.dtype
    ((3,), dtype('float32'))

  References:
    Gumbel, Statistical Theory of Extreme Values and Some Practical Applications,
    1954.
  """
  dtype = np.dtype(dtype) if not isinstance(dtype, np.dtype) else dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"`dtype` must be a floating-point dtype; got {dtype}.")
  shape = tuple(shape) if np.ndim(shape) else (int(shape),) if shape != () else ()
  noise_dtype = _checks.compute_dtype(dtype)
  return _noise.draw(jax.random.gumbel, key, shape, noise_dtype, mode="low").astype(dtype)


def gumbel_log_prob(x: ArrayLike) -> jax.Array:
  """Log-density of the standard Gumbel distribution, ``-(x + exp(-x))``.

  Computed and returned in float32 or wider (float64 inputs stay float64).

  Args:
    x: points at which to evaluate the log-density.

  Returns:
    The log-density, same shape as ``x``.

  Example:
    >>> float(gumbax.gumbel_log_prob(0.0))  # -x - exp(-x) at 0
    -1.0

  References:
    Gumbel, Statistical Theory of Extreme Values and Some Practical Applications,
    1954.
  """
  x = jnp.asarray(x)
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return -(x + jnp.exp(-x))


def gumbel_cdf(x: ArrayLike) -> jax.Array:
  """CDF of the standard Gumbel distribution, ``exp(-exp(-x))``.

  Computed and returned in float32 or wider.

  Args:
    x: points at which to evaluate the CDF.

  Returns:
    The CDF, same shape as ``x``.

  Example:
    >>> round(float(gumbax.gumbel_cdf(0.0)), 6)  # exp(-1)
    0.367879

  References:
    Gumbel, Statistical Theory of Extreme Values and Some Practical Applications,
    1954.
  """
  x = jnp.asarray(x)
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return jnp.exp(-jnp.exp(-x))


def perturb(key: ArrayLike, logits: jax.Array, dtype: np.dtype) -> jax.Array:
  """``logits + Gumbel noise`` in the compute dtype (private helper)."""
  cdtype = _checks.compute_dtype(dtype)
  return logits.astype(cdtype) + _noise.draw(jax.random.gumbel, key, logits.shape, cdtype,
                                              mode="low")


def one_hot_argmax(scores: jax.Array, axis: int, dtype: Any) -> jax.Array:
  """One-hot ``argmax(scores, axis)`` in ``dtype``; degenerate rows are all NaN.

  A row is degenerate when its maximum is not > -inf: every entry is ``-inf`` or one
  is NaN. (Private helper shared by every hard sampler, so that they agree.)
  """
  index = jnp.argmax(scores, axis=axis)
  one_hot = jax.nn.one_hot(index, scores.shape[axis], dtype=dtype, axis=axis)
  valid = jnp.max(scores, axis=axis, keepdims=True) > -jnp.inf
  return jnp.where(valid, one_hot, jnp.asarray(jnp.nan, dtype))


def gumbel_max(key: ArrayLike, logits: ArrayLike, *, axis: int = -1) -> jax.Array:
  """Draws a one-hot categorical sample with the Gumbel-max trick.

  ``argmax(logits + g)`` with ``g`` standard Gumbel noise is distributed as
  ``Categorical(softmax(logits))``. Logits equal to ``-inf`` mark masked categories,
  which are never sampled. With float32 noise, categories of probability below about
  1e-7 are sampled slightly too rarely (the noise's upper tail is truncated near
  15.9).

  Degenerate rows (every logit along ``axis`` is ``-inf``, or one is NaN) define no
  distribution. Concrete logits (NumPy, Python, a concrete ``jax.Array``) holding one
  are refused with a ``ValueError``; traced logits (under ``jit``, ``vmap``,
  ``grad``) cannot be checked, and such a row of the output is all NaN, so the
  problem shows up downstream instead of as a plausible-looking sample. Every
  categorical sampler (:func:`gumbax.gumbel_softmax`, soft and hard,
  :func:`gumbax.log_gumbel_softmax`, :func:`gumbax.straight_through`,
  :func:`gumbel_top_k`) does the same, so ``gumbel_softmax(..., hard=True)`` equals
  ``gumbel_max`` with the same key on every row, degenerate ones included.

  Args:
    key: a PRNG key.
    logits: unnormalized log-probabilities, floating point.
    axis: the category axis.

  Returns:
    A one-hot array of the logits' shape and dtype (no gradient flows through it);
    all-NaN rows where traced logits are degenerate.

  Raises:
    ValueError: concrete logits with a row that is all ``-inf`` or holds NaN.

  Example:
    >>> b = gumbax.gumbel_max(jax.random.key(0), jnp.log(jnp.array([0.2, 0.8])))
    >>> b.shape, float(b.sum())  # one-hot: category 1 with probability 0.8
    ((2,), 1.0)

  References:
    Gumbel, Statistical Theory of Extreme Values, 1954; Maddison, Tarlow, Minka,
    A* Sampling, 2014 (arXiv 1411.0030).
  """
  raw, (logits, dtype) = logits, _checks.as_logits(logits)
  axis = _checks.category_axis(axis, logits.ndim)
  _checks.check_rows(raw, axis)
  scores = perturb(key, jax.lax.stop_gradient(logits), dtype)
  return one_hot_argmax(scores, axis, dtype)


def gumbel_top_k(key: ArrayLike, logits: ArrayLike, k: int, *, axis: int = -1) -> jax.Array:
  """Draws ``k`` categories without replacement with the Gumbel-top-k trick.

  The indices of the ``k`` largest ``logits + g`` are ``k`` samples without
  replacement from ``Categorical(softmax(logits))``, in the order they would be
  drawn one by one. Masked (``-inf``) categories are never drawn, so ``k`` must not
  exceed the number of unmasked categories of any row: concrete logits (NumPy,
  Python, a concrete ``jax.Array``) that break this are refused with a
  ``ValueError``. Traced logits (under ``jit``, ``vmap``, ``grad``) cannot be
  checked; there, if ``k`` exceeds a row's unmasked count, that row's trailing
  indices are masked categories in an unspecified order.

  Degenerate rows (all ``-inf``, or holding a NaN) are treated as by
  :func:`gumbel_max`: refused when the logits are concrete. When traced, the
  integer output cannot hold NaN, so every index of such a row is ``-1``, which is
  never a valid category (check ``index >= 0``; note that NumPy-style indexing
  would read ``-1`` as the last category).

  Args:
    key: a PRNG key.
    logits: unnormalized log-probabilities, floating point.
    k: number of samples, ``1 <= k <= logits.shape[axis]``, and at most the number
      of unmasked categories in each row.
    axis: the category axis.

  Returns:
    int32 indices; the logits' shape with ``axis`` replaced by ``k``. Rows of
    traced degenerate logits are all ``-1``.

  Raises:
    ValueError: ``k`` out of range; concrete logits with a degenerate row or with a
      row of fewer than ``k`` unmasked categories (the message gives ``k``, the
      smallest unmasked count and the axis).

  Example:
    >>> idx = gumbax.gumbel_top_k(jax.random.key(0), jnp.zeros(5), 3)
    >>> idx.shape, len(set(idx.tolist()))  # 3 distinct indices out of 5
    ((3,), 3)

  References:
    Kool, van Hoof, Welling, Stochastic Beams and Where to Find Them: The
    Gumbel-Top-k Trick for Sampling Sequences Without Replacement, 2019
    (arXiv 1903.06059).
  """
  raw, (logits, dtype) = logits, _checks.as_logits(logits)
  axis = _checks.category_axis(axis, logits.ndim)
  num_classes = logits.shape[axis]
  k = _checks.check_subset_size(k, num_classes, axis)
  _checks.check_rows(raw, axis, k=k)
  scores = jnp.moveaxis(perturb(key, jax.lax.stop_gradient(logits), dtype), axis, -1)
  _, index = jax.lax.top_k(scores, k)
  valid = jnp.max(scores, axis=-1, keepdims=True) > -jnp.inf   # False for NaN rows too
  index = jnp.where(valid, index.astype(jnp.int32), -1)
  return jnp.moveaxis(index, -1, axis)


def _check_sample(sample: ArrayLike, logits: jax.Array, axis: int | None,
                  name: str = "sample") -> jax.Array:
  """Checks a sample's shape and, when it is concrete, its values.

  ``axis`` is the category axis of a one-hot sample (``conditional_gumbel``), or
  None for a binary one (``conditional_logistic``). Traced samples are not
  inspected.
  """
  raw, sample = sample, jnp.asarray(sample)
  if sample.shape != logits.shape:
    raise ValueError(
        f"`{name}` must have the logits' shape {logits.shape}; got {sample.shape}.")
  if _checks.is_concrete(raw):
    values = np.asarray(jax.device_get(raw))
    where = lambda mask: tuple(int(i) for i in np.argwhere(mask)[0])
    binary = (values == 0) | (values == 1)
    kind = ("one-hot along axis {axis} (in every row exactly one 1 and 0 elsewhere, as "
            "gumbel_max returns)" if axis is not None else
            "binary (0 or 1 in every entry, a Bernoulli sample)").format(axis=axis)
    if not np.all(binary):
      idx = where(~binary)
      raise ValueError(
          f"`{name}` must be {kind}; got the value {values[idx].item()!r} at index {idx} "
          f"({int(np.sum(~binary))} entries are neither 0 nor 1).")
    if axis is not None:
      ones = np.sum(values == 1, axis=axis)
      if np.any(ones != 1):
        idx = where(ones != 1)
        raise ValueError(
            f"`{name}` must be {kind}; got {int(ones[idx])} ones in the row at batch "
            f"index {idx} (the index into the shape without axis {axis}); "
            f"{int(np.sum(ones != 1))} row(s) are not one-hot.")
  return jax.lax.stop_gradient(sample)


def conditional_gumbel(key: ArrayLike, logits: ArrayLike, sample: ArrayLike, *,
                       axis: int = -1) -> jax.Array:
  """Draws Gumbel-perturbed logits conditioned on their argmax.

  Returns ``z ~ p(z | argmax(z) = b)`` where ``z = logits + g`` and ``b`` is the
  given one-hot ``sample``. The maximum is ``logsumexp(logits) + Gumbel`` (it is
  independent of the argmax) and every other coordinate is a Gumbel with location
  ``logits_i`` truncated below the maximum. The result is differentiable in the
  logits (a reparameterization of the conditional law), which is what REBAR, RELAX
  and Gumbel-Rao need. Masked (``-inf``) categories get ``z_i = -inf`` and zero
  gradient.

  Args:
    key: a PRNG key.
    logits: unnormalized log-probabilities, floating point.
    sample: a one-hot array of the logits' shape (no gradient flows into it). A
      concrete one (NumPy, Python, a concrete ``jax.Array``) is checked; a traced
      one (under ``jit``, ``vmap``, ``grad``) is not, and there every nonzero entry
      counts as chosen, so anything but a one-hot row gives a meaningless ``z``.
    axis: the category axis.

  Returns:
    ``z`` in the logits' dtype with ``argmax(z, axis) == argmax(sample, axis)``.

  Raises:
    ValueError: ``sample`` has the wrong shape, or is concrete and not one-hot along
      ``axis`` (an entry other than 0 or 1, a row without a 1 or with several).

  Example:
    >>> k1, k2 = jax.random.split(jax.random.key(0))
    >>> logits = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    >>> b = gumbax.gumbel_max(k1, logits)
    >>> z = gumbax.conditional_gumbel(k2, logits, b)
    >>> bool(jnp.argmax(z) == jnp.argmax(b))  # z's argmax is the given sample
    True

  References:
    Tucker et al., REBAR: Low-variance, unbiased gradient estimates for discrete
    latent variable models, 2017 (arXiv 1703.07370); Grathwohl et al.,
    Backpropagation through the Void, 2018 (arXiv 1711.00123), appendix.
  """
  logits, dtype = _checks.as_logits(logits)
  axis = _checks.category_axis(axis, logits.ndim)
  chosen = _check_sample(sample, logits, axis) > 0
  cdtype = _checks.compute_dtype(dtype)
  masked = logits == -jnp.inf
  l = jnp.where(masked, 0.0, logits.astype(cdtype))      # finite stand-in for masked
  log_z = jax.nn.logsumexp(jnp.where(masked, -jnp.inf, l), axis=axis, keepdims=True)
  # -log of Exp(1) variables E_i, drawn once for all coordinates.
  log_e = jnp.log(-jnp.log(_uniform_open(key, logits.shape, cdtype)))
  log_e_chosen = jnp.sum(jnp.where(chosen, log_e, 0.0), axis=axis, keepdims=True)
  top = log_z - log_e_chosen
  rest = -jnp.logaddexp(log_e - l, log_e_chosen - log_z)
  z = jnp.where(masked, -jnp.inf, jnp.where(chosen, top, rest)).astype(dtype)
  # Rounding (above all the cast to float16/bfloat16) can make a coordinate tie
  # with the maximum; keep every other coordinate strictly below it.
  top = jnp.max(jnp.where(chosen, z, -jnp.inf), axis=axis, keepdims=True)
  below = jnp.nextafter(jax.lax.stop_gradient(top), jnp.asarray(-jnp.inf, dtype))
  below = jnp.maximum(below, jnp.finfo(dtype).min)   # a maximum of -max stays finite
  return jnp.where(chosen, z, jnp.minimum(z, below))


def conditional_logistic(key: ArrayLike, logits: ArrayLike, sample: ArrayLike) -> jax.Array:
  """Draws logistic-perturbed logits conditioned on their sign.

  The Bernoulli analogue of :func:`conditional_gumbel`: with ``z = logits + L``
  (``L`` standard logistic) and ``b = 1[z > 0] ~ Bernoulli(sigmoid(logits))``, returns
  ``z ~ p(z | b)``, reparameterized so that it is differentiable in the logits.
  Computed in log space, so it is finite for all finite logits.

  Args:
    key: a PRNG key.
    logits: Bernoulli logits, floating point.
    sample: binary array of the logits' shape (no gradient flows into it). A
      concrete one (NumPy, Python, a concrete ``jax.Array``) is checked; a traced
      one (under ``jit``, ``vmap``, ``grad``) is not, and there every entry > 0
      counts as 1.

  Returns:
    ``z`` in the logits' dtype with ``z > 0`` exactly where ``sample`` is 1.

  Raises:
    ValueError: ``sample`` has the wrong shape, or is concrete and holds a value
      other than 0 and 1.

  Example:
    >>> k1, k2 = jax.random.split(jax.random.key(0))
    >>> logits = jnp.array([-1.0, 0.0, 2.0])
    >>> b = jax.random.bernoulli(k1, jax.nn.sigmoid(logits))
    >>> z = gumbax.conditional_logistic(k2, logits, b)
    >>> bool(jnp.all((z > 0) == b))  # z is positive exactly where b is 1
    True

  References:
    Tucker et al., REBAR, 2017 (arXiv 1703.07370), appendix; Grathwohl et al.,
    Backpropagation through the Void, 2018 (arXiv 1711.00123), appendix B.
  """
  logits, dtype = _checks.as_logits(logits)
  one = _check_sample(sample, logits, None) > 0
  cdtype = _checks.compute_dtype(dtype)
  l = logits.astype(cdtype)
  v = _uniform_open(key, logits.shape, cdtype)
  log_v, log1m_v = jnp.log(v), jnp.log1p(-v)
  log_p1, log_p0 = jax.nn.log_sigmoid(l), jax.nn.log_sigmoid(-l)
  # b = 1: v' = (1 - theta) + theta v,  1 - v' = theta (1 - v)
  # b = 0: v' = (1 - theta) v,          1 - v' = theta + (1 - theta)(1 - v)
  log_vp = jnp.where(one, jnp.logaddexp(log_p0, log_p1 + log_v), log_p0 + log_v)
  log_1m_vp = jnp.where(one, log_p1 + log1m_v, jnp.logaddexp(log_p1, log_p0 + log1m_v))
  z = l + log_vp - log_1m_vp
  # Rounding can land exactly on 0 for extreme logits; keep the sign consistent.
  tiny = jnp.finfo(dtype).smallest_normal
  z = z.astype(dtype)
  return jnp.where(one, jnp.maximum(z, tiny), jnp.minimum(z, -tiny))
