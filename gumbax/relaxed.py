"""Relaxed (Concrete / Gumbel-softmax) samplers and straight-through variants.

One mechanism serves every categorical function here: scores (logits, perturbed or
not) are shifted by their maximum, clamped far below it, and divided by the
temperature in float32 (float64 for float64 logits). The clamp keeps infinities
(from ``-inf`` masks or overflowing differences) away from the temperature's
gradient without changing any value: ``exp(-1e30 / tau)`` is exactly zero for every
tau below 1e28. The softmax (sigmoid) of the clamped scores has its own JVP, in
which the clamp is the identity (wherever it acts the output is exactly 0, or 0 or
1, so the tangent there is 0 anyway): reverse mode then saves only the output for
the backward pass, no clamp mask.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from gumbax import _checks
from gumbax import _noise
from gumbax.gumbel import one_hot_argmax, perturb

__all__ = [
    "gumbel_softmax",
    "log_gumbel_softmax",
    "relaxed_bernoulli",
    "relaxed_top_k",
    "straight_through",
]


def _tempered_scores(scores: jax.Array, temperature, axis: int) -> jax.Array:
  """``(scores - max(scores)) / temperature``, finite and NaN-free for any inputs.

  ``scores`` is in the compute dtype and may hold ``-inf`` (masked); the maximum
  along ``axis`` must be finite. The result is <= 0 with a 0 at the argmax.
  """
  batch_shape = scores.shape[:axis] + scores.shape[axis + 1:]
  tau = _checks.temperature_array(temperature, batch_shape, scores.dtype)
  shift = jax.lax.stop_gradient(jnp.max(scores, axis=axis, keepdims=True))
  diff = jnp.maximum(scores - shift, -_checks.SCORE_FLOOR)
  return diff * jnp.expand_dims(1.0 / tau, axis)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _clamped_softmax(diff: jax.Array, inv_tau: jax.Array, axis: int) -> jax.Array:
  """``softmax(max(diff, -SCORE_FLOOR) * inv_tau)`` for scores shifted to max 0.

  ``diff <= 0`` with a 0 at the argmax, so ``exp`` cannot overflow and the sum is
  >= 1 (no second max pass needed).
  """
  e = jnp.exp(jnp.maximum(diff, -_checks.SCORE_FLOOR) * inv_tau)
  return e / jnp.sum(e, axis=axis, keepdims=True)


@functools.partial(_clamped_softmax.defjvp, symbolic_zeros=True)
def _clamped_softmax_jvp(axis, primals, tangents):
  """``y * (x_dot - <y, x_dot>)`` with ``x_dot`` the tempered scores' tangent.

  The clamp is passed through as the identity: where it is active the output is
  exactly 0, so that coordinate's tangent is 0 whatever ``x_dot`` is (and it adds
  nothing to ``<y, x_dot>``). Reverse mode therefore keeps only ``y`` (and the
  clamped differences when the temperature is differentiated), not a mask.
  """
  diff, inv_tau = primals
  diff_dot, inv_tau_dot = tangents
  y = _clamped_softmax(diff, inv_tau, axis)
  x_dot = None
  if not isinstance(diff_dot, SymbolicZero):
    x_dot = diff_dot * inv_tau
  if not isinstance(inv_tau_dot, SymbolicZero):
    tau_term = jnp.maximum(diff, -_checks.SCORE_FLOOR) * inv_tau_dot
    x_dot = tau_term if x_dot is None else x_dot + tau_term
  if x_dot is None:
    return y, jnp.zeros_like(y)
  return y, y * (x_dot - jnp.sum(y * x_dot, axis=axis, keepdims=True))


@jax.custom_jvp
def _clamped_sigmoid(z: jax.Array, inv_tau: jax.Array) -> jax.Array:
  """``sigmoid(clip(z, -SCORE_FLOOR, SCORE_FLOOR) * inv_tau)``.

  Computed without the clip, which changes no value where ``inv_tau > 0`` (where
  it acts the result is exactly 0 or 1 either way); an infinite temperature
  (``inv_tau == 0``) gives 0.5 as the clip does, not ``sigmoid(inf * 0)``. (XLA's
  CPU backend runs the clamp, fused with the noise's logarithms, at about half the
  speed at some shapes.) The clip matters for the temperature's tangent, where it
  is applied.
  """
  return jnp.where(inv_tau > 0, jax.nn.sigmoid(z * inv_tau), 0.5)


@functools.partial(_clamped_sigmoid.defjvp, symbolic_zeros=True)
def _clamped_sigmoid_jvp(primals, tangents):
  """``y (1 - y) x_dot``, the clip passed through (where it acts, ``y (1 - y) = 0``)."""
  z, inv_tau = primals
  z_dot, inv_tau_dot = tangents
  y = _clamped_sigmoid(z, inv_tau)
  x_dot = None
  if not isinstance(z_dot, SymbolicZero):
    x_dot = z_dot * inv_tau
  if not isinstance(inv_tau_dot, SymbolicZero):
    floor = _checks.SCORE_FLOOR
    tau_term = jnp.clip(z, -floor, floor) * inv_tau_dot
    x_dot = tau_term if x_dot is None else x_dot + tau_term
  if x_dot is None:
    return y, jnp.zeros_like(y)
  return y, y * (1 - y) * x_dot


def st_combine(hard: jax.Array, soft: jax.Array) -> jax.Array:
  """``hard`` in the forward pass, ``soft``'s gradient in the backward pass.

  The difference is exactly zero in the forward pass, so the value is exactly
  ``hard`` (no rounding), and the gradient is exactly that of ``soft``.
  """
  return hard + (soft - jax.lax.stop_gradient(soft))


def softmax_scores(scores: jax.Array, temperature, axis: int) -> jax.Array:
  """``softmax(scores / temperature)`` in the scores' (compute) dtype, NaN-free.

  The same values as ``exp`` of the normalized :func:`_tempered_scores`; the
  backward pass keeps only the result (and, for a differentiated temperature, the
  clamped differences).
  """
  axis = axis % scores.ndim
  batch_shape = scores.shape[:axis] + scores.shape[axis + 1:]
  tau = _checks.temperature_array(temperature, batch_shape, scores.dtype)
  shift = jax.lax.stop_gradient(jnp.max(scores, axis=axis, keepdims=True))
  return _clamped_softmax(scores - shift, jnp.expand_dims(1.0 / tau, axis), axis)


def sigmoid_scores(scores: jax.Array, temperature) -> jax.Array:
  """``sigmoid(scores / temperature)`` in the scores' (compute) dtype, NaN-free."""
  tau = _checks.temperature_array(temperature, scores.shape, scores.dtype)
  return _clamped_sigmoid(scores, 1.0 / tau)


def gumbel_softmax(key: ArrayLike, logits: ArrayLike, temperature=1.0, *,
                   hard: bool = False, axis: int = -1) -> jax.Array:
  """Draws a Gumbel-softmax (Concrete) sample, optionally straight-through.

  ``y = softmax((logits + g) / temperature)`` with ``g`` standard Gumbel noise drawn
  in float32 (float64 for float64 logits); the sample is computed in that precision
  and cast once to the logits' dtype. At low temperatures coordinates of ``y``
  underflow to exactly 0 (they are never inf or NaN); use
  :func:`log_gumbel_softmax` when you need their logarithms (densities, KL terms).

  With ``hard=True`` the forward value is the exact one-hot ``argmax(logits + g)``
  (the same sample :func:`gumbax.gumbel_max` draws with the same key), and the
  gradient is that of the soft sample: the straight-through Gumbel-softmax
  estimator.

  ``-inf`` logits mark masked categories: they get exactly 0 and zero gradient.
  A degenerate row (every logit ``-inf``, or one NaN) is refused with a
  ``ValueError`` when the logits are concrete and gives an all-NaN row (soft and
  hard alike) when they are traced, as in :func:`gumbax.gumbel_max`.

  ``temperature`` may be a number or an array broadcasting against the logits'
  shape without the category axis (per-example or per-latent, learnable; gradients
  flow to it). A concrete temperature (Python or NumPy number or array, or a
  concrete ``jax.Array``) must be finite and > 0 in every entry, else
  ``ValueError``. Traced temperatures (under ``jit``, ``vmap``, ``grad``) cannot be
  checked: those below 1e-10, including ones that are <= 0 or NaN, act as 1e-10,
  i.e. the limit ``temperature -> 0+``: the output is the one-hot argmax, the
  temperature gets no gradient, and nothing is NaN.

  Args:
    key: a PRNG key (typed or legacy uint32).
    logits: unnormalized log-probabilities, floating point, categories on ``axis``.
    temperature: positive temperature, scalar or broadcastable array.
    hard: return the one-hot sample with the soft sample's gradient.
    axis: the category axis.

  Returns:
    A sample of the logits' shape and dtype on the probability simplex.

  Raises:
    ValueError: a concrete temperature that is not finite and > 0; concrete logits
      with a degenerate row; shapes or ``axis`` that do not fit.

  Example:
    >>> logits = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    >>> y = gumbax.gumbel_softmax(jax.random.key(0), logits, 0.5)
    >>> b = gumbax.gumbel_softmax(jax.random.key(0), logits, 0.5, hard=True)
    >>> bool(jnp.isclose(y.sum(), 1.0)), float(b.sum()), bool(jnp.argmax(b) == jnp.argmax(y))
    (True, 1.0, True)

  References:
    Jang, Gu, Poole, Categorical Reparameterization with Gumbel-Softmax, 2017
    (arXiv 1611.01144); Maddison, Mnih, Teh, The Concrete Distribution, 2017
    (arXiv 1611.00712).
  """
  raw, (logits, dtype) = logits, _checks.as_logits(logits)
  axis = _checks.category_axis(axis, logits.ndim)
  _checks.check_rows(raw, axis)
  scores = perturb(key, logits, dtype)
  soft = softmax_scores(scores, temperature, axis)
  if hard:
    soft = st_combine(one_hot_argmax(jax.lax.stop_gradient(scores), axis, soft.dtype), soft)
  return soft.astype(dtype)


def log_gumbel_softmax(key: ArrayLike, logits: ArrayLike, temperature=1.0, *,
                       axis: int = -1) -> jax.Array:
  """Draws an ExpConcrete sample: the logarithm of a Gumbel-softmax sample.

  ``x = log_softmax((logits + g) / temperature)``, computed without ever forming
  ``exp(x)``, so it stays informative at temperatures where
  :func:`gumbel_softmax` underflows to exact zeros; ``exp(x)`` is a Concrete
  sample. Use it for relaxed densities and KL terms
  (:func:`gumbax.exp_concrete_log_prob`). Values below the most negative finite
  number of the logits' dtype are clipped to it (``exp`` of it is exactly 0), and
  masked (``-inf``) categories get that value too, so the output is finite for every
  row with an unmasked category. Temperatures and degenerate rows (all ``-inf``, or
  holding a NaN: ``ValueError`` when concrete, an all-NaN row when traced) behave as
  in :func:`gumbel_softmax`.

  Args:
    key: a PRNG key.
    logits: unnormalized log-probabilities, floating point.
    temperature: positive temperature, scalar or broadcastable array.
    axis: the category axis.

  Returns:
    Log-probabilities (<= 0) of the logits' shape and dtype.

  Raises:
    ValueError: as :func:`gumbel_softmax`.

  Example:
    >>> logits = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    >>> x = gumbax.log_gumbel_softmax(jax.random.key(0), logits, 0.05)
    >>> bool(jnp.isclose(jax.nn.logsumexp(x), 0.0, atol=1e-6))  # exp(x) sums to 1
    True

  References:
    Maddison, Mnih, Teh, The Concrete Distribution, 2017 (arXiv 1611.00712),
    appendix C (ExpConcrete).
  """
  raw, (logits, dtype) = logits, _checks.as_logits(logits)
  axis = _checks.category_axis(axis, logits.ndim)
  _checks.check_rows(raw, axis)
  scores = perturb(key, logits, dtype)
  x = _tempered_scores(scores, temperature, axis)
  x = x - jnp.log(jnp.sum(jnp.exp(x), axis=axis, keepdims=True))
  # Masked categories (and scores beyond the clamp) hold no information: give them
  # the dtype's most negative value and no gradient.
  shift = jax.lax.stop_gradient(jnp.max(scores, axis=axis, keepdims=True))
  far = jax.lax.stop_gradient(scores - shift) <= -_checks.SCORE_FLOOR
  lowest = jnp.finfo(dtype).min
  return jnp.where(far, lowest, jnp.maximum(x, lowest)).astype(dtype)


def _remove_parts(alpha: jax.Array, inv_tau: jax.Array):
  """The values one step of the successive-softmax relaxation needs (categories last).

  With ``d = max(alpha - max(alpha), -SCORE_FLOOR)`` (the clamp of
  :func:`_tempered_scores`) and ``x = d * inv_tau``, returns ``d``, the mask ``top``
  of the unique maximum (empty on ties, where every ``p <= 1/2``), ``q`` (the
  softmax of ``x`` over the other categories, 0 at ``top``), ``p = softmax(x)`` and
  ``log(1 - p)``. At a unique maximum ``m``, ``log(1 - p_m) = L - log(1 + e^L)`` with
  ``L = logsumexp_{l != m} x_l`` computed around the second largest score, so it is
  exact and finite however close ``p_m`` is to 1 (as long as another category is
  unmasked); elsewhere it is ``log1p(-p)`` with ``p <= 1/2``. No argmax: the maxima
  are the entries where ``x == 0`` exactly (XLA's argmax is slow on CPU).
  """
  shift = jnp.max(alpha, axis=-1, keepdims=True)
  d = jnp.maximum(alpha - shift, -_checks.SCORE_FLOOR)
  x = d * inv_tau
  at_max = x == 0
  count = jnp.sum(at_max, axis=-1, keepdims=True, dtype=jnp.int32)
  second = jnp.max(jnp.where(at_max, -jnp.inf, x), axis=-1, keepdims=True)
  second = jnp.where(second > -jnp.inf, second, 0.0)
  e = jnp.exp(jnp.where(at_max, -jnp.inf, x - second))
  total = jnp.sum(e, axis=-1, keepdims=True)
  some = total > 0
  total = jnp.where(some, total, 1.0)
  others = jnp.where(some, second + jnp.log(total), -jnp.inf)   # logsumexp over x < 0
  log_norm = jnp.logaddexp(jnp.log(count.astype(x.dtype)), others)
  p = jnp.where(at_max, jnp.exp(-log_norm), e * jnp.exp(second - log_norm))
  top = at_max & (count == 1)
  log1m_p = jnp.where(top, others - log_norm, jnp.log1p(-jnp.where(top, 0.0, p)))
  return d, top, e / total, p, log1m_p


@jax.custom_jvp
def _remove_step(alpha: jax.Array, inv_tau: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One step of the successive-softmax relaxation, categories on the last axis.

  Returns ``p = softmax(alpha / tau)`` and ``alpha + log(1 - p)``, computed as in
  :func:`_remove_parts`. ``-inf`` (masked) entries stay ``-inf`` and get zero
  gradient. The JVP is written out (``dp = p (dx - <p, dx>)``;
  ``d log(1 - p_l) = -p_l / (1 - p_l) (dx_l - <p, dx>)`` off the unique maximum and
  ``-p_m (dx_m - <q, dx>)`` at it, finite however close ``p_m`` is to 1), so reverse
  mode keeps a few arrays per step instead of every intermediate.
  """
  _, _, _, p, log1m_p = _remove_parts(alpha, inv_tau)
  return p, alpha + log1m_p


@functools.partial(_remove_step.defjvp, symbolic_zeros=True)
def _remove_step_jvp(primals, tangents):
  alpha, inv_tau = primals
  alpha_dot, inv_tau_dot = tangents
  d, top, q, p, log1m_p = _remove_parts(alpha, inv_tau)
  out = (p, alpha + log1m_p)
  x_dot = None
  if not isinstance(alpha_dot, SymbolicZero):
    x_dot = alpha_dot * inv_tau
  if not isinstance(inv_tau_dot, SymbolicZero):
    tau_term = d * inv_tau_dot
    x_dot = tau_term if x_dot is None else x_dot + tau_term
  if x_dot is None:
    return out, (jnp.zeros_like(p), jnp.zeros_like(p))
  mean = jnp.sum(p * x_dot, axis=-1, keepdims=True)
  mean_others = jnp.sum(q * x_dot, axis=-1, keepdims=True)
  odds = jnp.where(top, p, p / (1 - jnp.where(top, 0.0, p)))
  p_dot = p * (x_dot - mean)
  log1m_p_dot = -odds * (x_dot - jnp.where(top, mean_others, mean))
  if not isinstance(alpha_dot, SymbolicZero):
    log1m_p_dot = alpha_dot + log1m_p_dot
  return out, (p_dot, log1m_p_dot)


def relaxed_top_k(key: ArrayLike, logits: ArrayLike, k: int, temperature, *,
                  hard: bool = False, axis: int = -1) -> jax.Array:
  """Draws a relaxed k-hot subset: Xie & Ermon's successive softmax relaxation.

  With Gumbel-perturbed scores ``alpha_1 = logits + g`` (the noise
  :func:`gumbax.gumbel_top_k` draws with the same key), ``k`` softmaxes are taken in
  turn, each after down-weighting what the previous ones chose::

    p_j = softmax(alpha_j / temperature),   alpha_{j+1} = alpha_j + log(1 - p_j),
    y = p_1 + ... + p_k.

  ``y`` sums to ``k`` along ``axis`` (its entries are not capped at 1: at high
  temperatures a likely category can collect more than 1) and, as the temperature
  goes to 0, tends to the
  k-hot indicator of the ``k`` largest scores: the set ``gumbel_top_k`` draws, a
  sample without replacement from ``Categorical(softmax(logits))``. ``log(1 - p)``
  is computed in log space (exact and finite even where ``p`` rounds to 1), so low
  temperatures give that set rather than choosing the same category twice.

  With ``hard=True`` the forward value is exactly that k-hot set (the categories of
  ``gumbel_top_k(key, logits, k, axis=axis)``) and the gradient is that of the
  relaxed ``y``: the straight-through subset estimator.

  ``-inf`` logits mark masked categories: they get exactly 0, zero gradient and are
  never selected, so ``k`` must not exceed the unmasked count of any row; concrete
  logits that break this, or that have a degenerate row (all ``-inf`` or a NaN),
  are refused with a ``ValueError``. When traced, degenerate rows (and rows with
  fewer than ``k`` unmasked categories) give NaN. ``temperature`` follows the rules
  of :func:`gumbel_softmax`: a number or an array broadcasting against the logits'
  shape without the category axis, learnable; concrete values must be finite and
  > 0, traced ones below 1e-10 act as 1e-10.

  Args:
    key: a PRNG key.
    logits: unnormalized log-probabilities, floating point, categories on ``axis``.
    k: the subset size, ``1 <= k <=`` the number of unmasked categories of each row.
    temperature: positive temperature, scalar or broadcastable array.
    hard: return the exact k-hot set with the relaxed sample's gradient.
    axis: the category axis.

  Returns:
    The relaxed (or hard) k-hot sample, of the logits' shape and dtype.

  Raises:
    ValueError: ``k`` out of range; concrete logits with a degenerate row or a row
      of fewer than ``k`` unmasked categories; a concrete temperature that is not
      finite and > 0.
    TypeError: ``k`` is not an integer.

  Example:
    >>> key, logits = jax.random.key(0), jnp.array([2.0, 0.0, 1.0, -1.0, 0.5])
    >>> y = gumbax.relaxed_top_k(key, logits, 2, 0.1)
    >>> h = gumbax.relaxed_top_k(key, logits, 2, 0.1, hard=True)
    >>> round(float(y.sum()), 4), h.tolist()
    (2.0, [1.0, 1.0, 0.0, 0.0, 0.0])
    >>> sorted(gumbax.gumbel_top_k(key, logits, 2).tolist())  # the same set
    [0, 1]

  References:
    Xie, Ermon, Reparameterizable Subset Sampling via Continuous Relaxations, 2019
    (arXiv 1901.10517); Kool, van Hoof, Welling, Stochastic Beams and Where to Find
    Them, 2019 (arXiv 1903.06059).
  """
  raw, (logits, dtype) = logits, _checks.as_logits(logits)
  axis = _checks.category_axis(axis, logits.ndim)
  num_classes = logits.shape[axis]
  k = _checks.check_subset_size(k, num_classes, axis)
  if not isinstance(hard, bool):
    raise TypeError(f"`hard` must be a bool; got {hard!r}.")
  _checks.check_rows(raw, axis, k=k)
  scores = jnp.moveaxis(perturb(key, logits, dtype), axis, -1)
  tau = _checks.temperature_array(temperature, scores.shape[:-1], scores.dtype)
  inv_tau = jnp.expand_dims(1.0 / tau, -1)

  def step(carry, _):
    alpha, total = carry
    p, alpha = _remove_step(alpha, inv_tau)
    return (alpha, total + p), None

  (_, soft), _ = jax.lax.scan(step, (scores, jnp.zeros_like(scores)), None, length=k)
  if hard:
    fixed = jax.lax.stop_gradient(scores)
    _, index = jax.lax.top_k(fixed, k)
    k_hot = jnp.sum(jax.nn.one_hot(index, num_classes, dtype=soft.dtype), axis=-2)
    valid = jnp.max(fixed, axis=-1, keepdims=True) > -jnp.inf   # False for NaN rows too
    soft = st_combine(jnp.where(valid, k_hot, jnp.nan), soft)
  return jnp.moveaxis(soft, -1, axis).astype(dtype)


def straight_through(key: ArrayLike, logits: ArrayLike, *, temperature=1.0,
                     axis: int = -1, backward: str = "softmax") -> jax.Array:
  """Plain straight-through: a categorical sample with the softmax's gradient.

  The forward value is an exact one-hot sample from ``Categorical(softmax(logits))``
  (drawn by Gumbel-max); the backward pass uses the gradient of
  ``softmax(logits / temperature)``. ``temperature`` (default 1) is the slope of the
  backward softmax, which a schedule anneals for "annealed ST"; it follows the same
  rules as in :func:`gumbel_softmax`. ``backward="identity"`` passes the sample's
  gradient to the logits unchanged (divided by ``temperature``): the Jacobian is
  ``I / temperature`` instead of the softmax's, so the gradient does not vanish
  where the distribution is nearly deterministic (Bengio et al.'s "as if the hard
  threshold were the identity"); masked (``-inf``) categories get zero gradient.
  Degenerate rows (all ``-inf``, or holding a NaN) behave as in
  :func:`gumbax.gumbel_max`: ``ValueError`` when the logits are concrete, an
  all-NaN row when they are traced, whichever ``backward``.

  Args:
    key: a PRNG key.
    logits: unnormalized log-probabilities, floating point.
    temperature: slope of the backward softmax (or identity).
    axis: the category axis.
    backward: ``"softmax"`` (default) or ``"identity"``.

  Returns:
    A one-hot sample of the logits' shape and dtype.

  Raises:
    ValueError: as :func:`gumbel_softmax`, or an unknown ``backward``.

  Example:
    >>> logits = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    >>> b = gumbax.straight_through(jax.random.key(0), logits)
    >>> b.shape, float(b.sum()), float(b.max())  # a one-hot sample
    ((3,), 1.0, 1.0)

  References:
    Bengio, Leonard, Courville, Estimating or Propagating Gradients Through
    Stochastic Neurons for Conditional Computation, 2013 (arXiv 1308.3432).
  """
  raw, (logits, dtype) = logits, _checks.as_logits(logits)
  axis = _checks.category_axis(axis, logits.ndim)
  _checks.check_rows(raw, axis)
  cdtype = _checks.compute_dtype(dtype)
  soft = st_backward(logits.astype(cdtype), temperature, backward, axis)
  scores = perturb(key, jax.lax.stop_gradient(logits), dtype)
  return st_combine(one_hot_argmax(scores, axis, cdtype), soft).astype(dtype)


ST_BACKWARDS = ("softmax", "identity")


def check_st_backward(backward: str) -> None:
  """``backward`` names one of plain straight-through's backward passes."""
  if backward not in ST_BACKWARDS:
    raise ValueError(f"`backward` must be one of {list(ST_BACKWARDS)}; got {backward!r}.")


def st_backward(logits: jax.Array, temperature, backward: str, axis: int | None) -> jax.Array:
  """What plain straight-through differentiates: ``softmax(logits / temperature)``
  (``sigmoid`` for Bernoulli logits, ``axis=None``) or, for ``backward="identity"``,
  ``logits / temperature`` itself (masked ``-inf`` logits read as 0 there, so that
  they add 0, not NaN, to the forward value and get zero gradient)."""
  check_st_backward(backward)
  if axis is None:
    if backward == "softmax":
      return sigmoid_scores(logits, temperature)
    return logits / _checks.temperature_array(temperature, logits.shape, logits.dtype)
  if backward == "softmax":
    return softmax_scores(logits, temperature, axis)
  axis = axis % logits.ndim
  batch_shape = logits.shape[:axis] + logits.shape[axis + 1:]
  tau = _checks.temperature_array(temperature, batch_shape, logits.dtype)
  return jnp.where(logits == -jnp.inf, 0.0, logits) / jnp.expand_dims(tau, axis)


def relaxed_bernoulli(key: ArrayLike, logits: ArrayLike, temperature=1.0, *,
                      hard: bool = False) -> jax.Array:
  """Draws a relaxed Bernoulli (Binary Concrete) sample, optionally straight-through.

  ``y = sigmoid((logits + L) / temperature)`` with ``L`` standard logistic noise
  drawn in float32 (float64 for float64 logits) and the result cast once to the
  logits' dtype. With ``hard=True`` the forward value is exactly ``1[logits + L > 0]``
  (a Bernoulli(sigmoid(logits)) sample) and the gradient is that of the soft sample.
  ``temperature`` is a number or an array broadcasting to the logits' shape. A
  concrete one (Python or NumPy number or array, or a concrete ``jax.Array``) must
  be finite and > 0 in every entry, else ``ValueError``; traced temperatures (under
  ``jit``, ``vmap``, ``grad``) are not checked, and those below 1e-10 (<= 0 or NaN
  included) act as 1e-10 (the hard sample, no NaN).

  Args:
    key: a PRNG key.
    logits: Bernoulli logits, floating point, any shape.
    temperature: positive temperature, scalar or broadcastable array.
    hard: return the binary sample with the soft sample's gradient.

  Returns:
    A sample in [0, 1] of the logits' shape and dtype.

  Raises:
    ValueError: a concrete temperature that is not finite and > 0, or one that does
      not broadcast to the logits' shape.

  Example:
    >>> y = gumbax.relaxed_bernoulli(jax.random.key(0), jnp.zeros(3), 2 / 3)
    >>> y.shape, bool(jnp.all((y > 0) & (y < 1)))
    ((3,), True)

  References:
    Maddison, Mnih, Teh, The Concrete Distribution, 2017 (arXiv 1611.00712);
    Jang, Gu, Poole, Categorical Reparameterization with Gumbel-Softmax, 2017
    (arXiv 1611.01144).
  """
  logits, dtype = _checks.as_logits(logits)
  cdtype = _checks.compute_dtype(dtype)
  noise = _noise.draw(jax.random.logistic, key, logits.shape, cdtype)
  z = logits.astype(cdtype) + noise
  soft = sigmoid_scores(z, temperature)
  if hard:
    soft = st_combine((jax.lax.stop_gradient(z) > 0).astype(cdtype), soft)
  return soft.astype(dtype)
