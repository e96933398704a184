"""Log-densities of the Concrete, ExpConcrete and Binary Concrete distributions.

Densities are computed and returned in float32 (float64 when an input is float64)
whatever the inputs' dtype. The Concrete density is computed through its log-space
(ExpConcrete) form, so it is finite wherever the sample is; at low temperatures,
where plain samples underflow to 0, evaluate ``exp_concrete_log_prob`` on samples
from :func:`gumbax.log_gumbel_softmax` instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gumbax import _checks

__all__ = [
    "binary_concrete_log_prob",
    "binary_concrete_logit_log_prob",
    "concrete_log_prob",
    "exp_concrete_log_prob",
]


def _as_inputs(sample, logits, sample_name):
  """Validates a sample's and the logits' dtypes; returns them and the compute dtype."""
  sample = jnp.asarray(sample)
  logits = jnp.asarray(logits)
  _checks.float_dtype(sample, sample_name)
  _checks.float_dtype(logits, "logits")
  cdtype = _checks.compute_dtype(jnp.promote_types(sample.dtype, logits.dtype))
  return sample, logits, cdtype


def _broadcast_shape(sample, logits, sample_name) -> tuple[int, ...]:
  """The NumPy broadcast of the sample's and the logits' shapes, or a ValueError."""
  try:
    return tuple(np.broadcast_shapes(sample.shape, logits.shape))
  except ValueError:
    raise ValueError(
        f"`{sample_name}` of shape {sample.shape} and `logits` of shape {logits.shape} "
        "do not broadcast against each other (NumPy rules: trailing dimensions are "
        "aligned and must be equal or 1).") from None


def _temperature_shape(temperature, batch_shape, what) -> tuple[int, ...]:
  """Checks a concrete temperature; returns its broadcast with ``batch_shape``."""
  _checks.check_positive_static(temperature, "temperature")
  tau_shape = np.shape(temperature)
  try:
    return tuple(np.broadcast_shapes(tau_shape, batch_shape))
  except ValueError:
    raise ValueError(
        f"`temperature` of shape {tau_shape} does not broadcast against {what} "
        f"{batch_shape}.") from None


def _prepare(sample, logits, temperature, axis, sample_name):
  """Validates and broadcasts a categorical sample, logits and a temperature.

  The sample and the logits broadcast like NumPy arrays; ``axis`` indexes their
  broadcast shape; the temperature broadcasts against that shape without ``axis``
  and may add leading batch dimensions. Returns the sample and logits broadcast to
  the full shape (compute dtype), the temperature with a size-1 category axis, and
  the category axis in that shape.
  """
  sample, logits, cdtype = _as_inputs(sample, logits, sample_name)
  shape = _broadcast_shape(sample, logits, sample_name)
  axis = _checks.category_axis(axis, len(shape), sample_name)
  batch = shape[:axis] + shape[axis + 1:]
  out_batch = _temperature_shape(
      temperature, batch,
      f"the broadcast shape of `{sample_name}` and `logits` without the category axis "
      f"{axis},")
  new = len(out_batch) - len(batch)          # leading dims added by the temperature
  axis += new
  shape = out_batch[:axis] + (shape[axis - new],) + out_batch[axis:]
  sample = jnp.broadcast_to(sample.astype(cdtype), shape)
  logits = jnp.broadcast_to(logits.astype(cdtype), shape)
  tau = _checks.temperature_array(temperature, out_batch, cdtype)
  return sample, logits, jnp.expand_dims(tau, axis), axis


def _exp_concrete(x, logits, tau, axis):
  masked = logits == -jnp.inf
  x = jnp.where(masked, 0.0, x)
  logits = jnp.where(masked, 0.0, logits)
  k = jnp.sum(~masked, axis=axis).astype(x.dtype)
  terms = logits - tau * x
  lse = jax.nn.logsumexp(jnp.where(masked, -jnp.inf, terms), axis=axis)
  return (jax.scipy.special.gammaln(k) + (k - 1) * jnp.log(jnp.squeeze(tau, axis))
          + jnp.sum(jnp.where(masked, 0.0, terms), axis=axis) - k * lse), masked


def exp_concrete_log_prob(x: ArrayLike, logits: ArrayLike, temperature, *,
                          axis: int = -1) -> jax.Array:
  """Log-density of an ExpConcrete sample (the log of a Concrete sample).

  ``log p(x) = log Gamma(k) + (k-1) log tau + sum_i (logits_i - tau x_i)
  - k logsumexp(logits - tau x)``, the standard ExpConcrete log-density of Maddison
  et al. (also TFP's and PyTorch's). Its base measure is ``exp(-x_k) dx_1 ...
  dx_{k-1}``: the Lebesgue density of the first ``k - 1`` coordinates is
  ``exp_concrete_log_prob(x) - x_k``, and
  ``concrete_log_prob(y) = exp_concrete_log_prob(log y) - sum_i log y_i``.
  Differences of log-densities (KL terms) are unaffected. Stable at any temperature. Masked categories
  (``-inf`` logits) are left out, and ``k`` counts the unmasked ones. KL divergences
  between relaxed distributions are invariant under ``x -> exp(x)``, so compute them
  with this density on :func:`gumbax.log_gumbel_softmax` samples.

  Args:
    x: log-space sample; broadcasts against ``logits`` (NumPy rules, any ranks:
      a batch of samples against one distribution, one sample against a batch of
      distributions, or PyTorch's ``sample_shape + batch_shape + (K,)``).
    logits: unnormalized log-probabilities.
    temperature: positive temperature, scalar or array broadcasting against the
      batch shape (the broadcast shape without the category axis); it may add
      leading batch dimensions (a batch of temperatures).
    axis: the category axis of the broadcast shape.

  Returns:
    The log-density, float32 or wider, of the broadcast shape of the inputs
    without the category axis (broadcast with the temperature's shape).

  Raises:
    ValueError: shapes that do not broadcast (the message gives both), a bad
      ``axis``, or a concrete temperature that is not finite and > 0 (traced
      temperatures are not checked; those below 1e-10 act as 1e-10).

  Example:
    >>> key, logits = jax.random.key(0), jnp.log(jnp.array([0.2, 0.3, 0.5]))
    >>> x = gumbax.log_gumbel_softmax(key, logits, 0.1)
    >>> lp = gumbax.exp_concrete_log_prob(x, logits, 0.1)
    >>> lp.shape, bool(jnp.isfinite(lp))  # one log-density per sample
    ((), True)

  References:
    Maddison, Mnih, Teh, The Concrete Distribution, 2017 (arXiv 1611.00712),
    appendix C.
  """
  x, logits, tau, axis = _prepare(x, logits, temperature, axis, "x")
  return _exp_concrete(x, logits, tau, axis)[0]


def concrete_log_prob(y: ArrayLike, logits: ArrayLike, temperature, *,
                      axis: int = -1) -> jax.Array:
  """Log-density of a Concrete (Gumbel-softmax) sample on the simplex.

  ``log p(y) = log Gamma(k) + (k-1) log tau - k log(sum_i pi_i y_i^-tau)
  + sum_i (log pi_i - (tau + 1) log y_i)``, with respect to Lebesgue measure on
  the first ``k - 1`` coordinates, computed as ``exp_concrete_log_prob(log y) -
  sum(log y)``. Coordinates that underflowed to 0 are read as the smallest positive
  normal number, so the result is finite but inaccurate there: at low temperatures
  use :func:`exp_concrete_log_prob` on log-space samples. Masked categories
  (``-inf`` logits) are left out.

  Args:
    y: a point of the simplex; broadcasts against ``logits`` (NumPy rules, any
      ranks, as in :func:`exp_concrete_log_prob`).
    logits: unnormalized log-probabilities.
    temperature: positive temperature, scalar or array broadcasting against the
      batch shape (it may add leading batch dimensions).
    axis: the category axis of the broadcast shape.

  Returns:
    The log-density, float32 or wider, of the broadcast shape of the inputs
    without the category axis (broadcast with the temperature's shape).

  Raises:
    ValueError: shapes that do not broadcast (the message gives both), a bad
      ``axis``, or a concrete temperature that is not finite and > 0 (traced
      temperatures are not checked; those below 1e-10 act as 1e-10).

  Example:
    >>> key, logits = jax.random.key(0), jnp.log(jnp.array([0.2, 0.3, 0.5]))
    >>> y = gumbax.gumbel_softmax(key, logits, 0.5)
    >>> lp = gumbax.concrete_log_prob(y, logits, 0.5)
    >>> lp.shape, bool(jnp.isfinite(lp))  # one log-density per sample
    ((), True)

  References:
    Maddison, Mnih, Teh, The Concrete Distribution, 2017 (arXiv 1611.00712);
    Jang, Gu, Poole, Categorical Reparameterization with Gumbel-Softmax, 2017
    (arXiv 1611.01144).
  """
  y, logits, tau, axis = _prepare(y, logits, temperature, axis, "y")
  log_y = jnp.log(jnp.maximum(y, jnp.finfo(y.dtype).smallest_normal))
  log_p, masked = _exp_concrete(log_y, logits, tau, axis)
  return log_p - jnp.sum(jnp.where(masked, 0.0, log_y), axis=axis)


def _prepare_binary(sample, logits, temperature, sample_name):
  """Validates a sample, logits and temperature and broadcasts all three (NumPy rules)."""
  sample, logits, cdtype = _as_inputs(sample, logits, sample_name)
  shape = _broadcast_shape(sample, logits, sample_name)
  shape = _temperature_shape(
      temperature, shape, f"the broadcast shape of `{sample_name}` and `logits`,")
  tau = _checks.temperature_array(temperature, shape, cdtype)
  return (jnp.broadcast_to(sample.astype(cdtype), shape),
          jnp.broadcast_to(logits.astype(cdtype), shape), tau)


def _logistic_log_prob(x, logits, tau):
  d = logits - tau * x
  return jnp.log(tau) + d - 2.0 * jax.nn.softplus(d)


def binary_concrete_logit_log_prob(x: ArrayLike, logits: ArrayLike,
                                   temperature) -> jax.Array:
  """Log-density of a Binary Concrete sample in logit space.

  For ``x = (logits + L) / tau`` with ``L`` standard logistic (so that
  ``sigmoid(x)`` is a relaxed Bernoulli sample), ``log p(x) = log tau + d -
  2 softplus(d)`` with ``d = logits - tau x``. Stable at any temperature; the
  right density for relaxed KL terms of Bernoulli latents. Elementwise.

  Args:
    x: logit-space sample; broadcasts against ``logits`` (NumPy rules, any ranks).
    logits: Bernoulli logits.
    temperature: positive temperature, scalar or array broadcasting against the
      inputs (it may add leading dimensions).

  Returns:
    Elementwise log-density, float32 or wider, of the broadcast shape of all three
    inputs.

  Raises:
    ValueError: shapes that do not broadcast (the message gives them), or a
      concrete temperature that is not finite and > 0 (traced temperatures are not
      checked; those below 1e-10 act as 1e-10).

  Example:
    >>> key, logits, tau = jax.random.key(0), jnp.array([-1.0, 0.0, 2.0]), 0.5
    >>> x = (logits + jax.random.logistic(key, logits.shape)) / tau
    >>> lp = gumbax.binary_concrete_logit_log_prob(x, logits, tau)
    >>> lp.shape, bool(jnp.all(jnp.isfinite(lp)))  # one log-density per variable
    ((3,), True)

  References:
    Maddison, Mnih, Teh, The Concrete Distribution, 2017 (arXiv 1611.00712),
    appendix C.
  """
  x, logits, tau = _prepare_binary(x, logits, temperature, "x")
  return _logistic_log_prob(x, logits, tau)


def binary_concrete_log_prob(y: ArrayLike, logits: ArrayLike, temperature) -> jax.Array:
  """Log-density of a Binary Concrete (relaxed Bernoulli) sample on (0, 1).

  ``log p(y) = log tau + log alpha - (tau + 1)(log y + log(1 - y))
  - 2 log(alpha y^-tau + (1 - y)^-tau)`` with ``alpha = exp(logits)``, computed as
  the logit-space density at ``logit(y)`` minus ``log y + log(1 - y)``. Values of
  ``y`` that rounded to exactly 0 or 1 are moved to the nearest representable
  interior point, so the result is finite but inaccurate there; at low temperatures
  use :func:`binary_concrete_logit_log_prob`. Elementwise.

  Args:
    y: a point of (0, 1); broadcasts against ``logits`` (NumPy rules, any ranks).
    logits: Bernoulli logits.
    temperature: positive temperature, scalar or array broadcasting against the
      inputs (it may add leading dimensions).

  Returns:
    Elementwise log-density, float32 or wider, of the broadcast shape of all three
    inputs.

  Raises:
    ValueError: shapes that do not broadcast (the message gives them), or a
      concrete temperature that is not finite and > 0 (traced temperatures are not
      checked; those below 1e-10 act as 1e-10).

  Example:
    >>> key, logits = jax.random.key(0), jnp.array([-1.0, 0.0, 2.0])
    >>> y = gumbax.relaxed_bernoulli(key, logits, 0.5)
    >>> lp = gumbax.binary_concrete_log_prob(y, logits, 0.5)
    >>> lp.shape, bool(jnp.all(jnp.isfinite(lp)))  # one log-density per variable
    ((3,), True)

  References:
    Maddison, Mnih, Teh, The Concrete Distribution, 2017 (arXiv 1611.00712).
  """
  y, logits, tau = _prepare_binary(y, logits, temperature, "y")
  finfo = jnp.finfo(y.dtype)
  y = jnp.clip(y, finfo.smallest_normal, 1.0 - finfo.epsneg)
  log_y, log1m_y = jnp.log(y), jnp.log1p(-y)
  return _logistic_log_prob(log_y - log1m_y, logits, tau) - log_y - log1m_y
