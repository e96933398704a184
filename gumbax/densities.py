"""Log-densities of the Concrete, ExpConcrete and Binary Concrete distributions, and
the closed-form KL divergences and entropies of categorical and Bernoulli distributions.

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
    "bernoulli_entropy",
    "bernoulli_kl",
    "binary_concrete_logit_log_prob",
    "categorical_entropy",
    "categorical_kl",
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




def _kl_inputs(logits, prior_logits, finite_prior: bool):
  """Validated logits and prior logits in the compute dtype, broadcast to one shape;
  with ``finite_prior``, the prior's ``-inf`` (masked categories) moved to
  ``-finfo.max / 2`` first.

  A category that both ``q`` and the prior mask has probability 0 under ``q``, so
  its KL term is 0; with both log-probabilities at ``-inf`` it would be ``0 * (-inf
  + inf) = NaN``. Moved, the prior's log-probability is finite and the term an exact
  0. The prior is replaced on its own shape, before broadcasting, by one ``where``
  with a constant, so its gradient takes one path.
  """
  logits, prior_logits = jnp.asarray(logits), jnp.asarray(prior_logits)
  _checks.float_dtype(logits, "logits")
  _checks.float_dtype(prior_logits, "prior_logits")
  cdtype = _checks.compute_dtype(jnp.promote_types(logits.dtype, prior_logits.dtype))
  try:
    shape = tuple(np.broadcast_shapes(logits.shape, prior_logits.shape))
  except ValueError:
    raise ValueError(
        f"`logits` of shape {logits.shape} and `prior_logits` of shape "
        f"{prior_logits.shape} do not broadcast against each other (NumPy rules: trailing "
        "dimensions are aligned and must be equal or 1).") from None
  logits, prior_logits = logits.astype(cdtype), prior_logits.astype(cdtype)
  if finite_prior:
    big = np.asarray(np.finfo(cdtype).max / 2, cdtype)
    prior_logits = jnp.where(prior_logits == -np.inf, -big, prior_logits)
  return jnp.broadcast_to(logits, shape), jnp.broadcast_to(prior_logits, shape)


def categorical_kl(logits: ArrayLike, prior_logits: ArrayLike, *, axis: int = -1,
                   masked: bool = True) -> jax.Array:
  """``KL(q || p)`` between two categorical distributions given by their logits.

  ``KL = sum_k q_k (log q_k - log p_k)`` with ``q = softmax(logits)`` and ``p =
  softmax(prior_logits)`` along ``axis``, in closed form: one value per
  distribution (the category axis is summed; sum the result over your latents for a
  VAE's KL term). Masked categories (``-inf`` logits, ``q_k = 0``) contribute 0 and
  the value and its gradient stay finite, also where the prior masks them too.
  Where ``q`` puts mass on a category the prior masks, the KL is infinite; the
  value returned there is not ``inf`` but huge (about ``q_k * finfo.max / 2``, or
  ``inf`` if that overflows). Computed in float32 (float64 when an input is
  float64).

  Args:
    logits: unnormalized log-probabilities of ``q``.
    prior_logits: unnormalized log-probabilities of ``p``; broadcasts against
      ``logits`` (NumPy rules: e.g. one prior of shape ``(num_latents, K)`` for a
      batch of posteriors).
    axis: the category axis of the broadcast shape.
    masked: True (default): ``-inf`` logits are allowed, as above. False: the
      logits must be finite and the plain formula ``sum exp(log q) (log q - log
      p)`` is computed, operation for operation (a ``-inf`` gives NaN). Inside a
      larger jitted program the guards change how XLA fuses and rounds the sums
      (in the last bits), so code whose results must stay bit-identical to the
      plain formula's passes False.

  Returns:
    The KL divergence, float32 or wider, of the broadcast shape without ``axis``.

  Raises:
    TypeError: non-floating logits, a non-integer ``axis`` or a non-bool ``masked``.
    ValueError: shapes that do not broadcast (the message gives both), or an
      ``axis`` out of range.

  Example:
    >>> logits = jnp.log(jnp.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]]))  # (L, K)
    >>> kl = gumbax.categorical_kl(logits, jnp.zeros_like(logits))  # to uniform
    >>> kl.shape, bool(jnp.all(jnp.isfinite(kl)))   # one value per latent; masked: finite
    ((2,), True)
    >>> print(round(float(kl[0]), 4))               # log 3 - log 2
    0.4055

  References:
    Kullback, Leibler, On Information and Sufficiency, 1951, Annals of
    Mathematical Statistics 22(1); Cover, Thomas, Elements of Information Theory,
    2nd ed., 2006, section 2.3.
  """
  _check_masked(masked)
  logits, prior_logits = _kl_inputs(logits, prior_logits, finite_prior=masked)
  axis = _checks.category_axis(axis, logits.ndim)
  log_q = _finite_log_softmax(logits, axis) if masked else jax.nn.log_softmax(logits, axis=axis)
  log_p = jax.nn.log_softmax(prior_logits, axis=axis)
  return jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=axis)


def _check_masked(masked):
  if not isinstance(masked, bool):
    raise TypeError(f"`masked` must be a bool; got {masked!r}.")


def _finite_log_softmax(logits, axis):
  """``log_softmax`` with its ``-inf`` (masked categories) moved to ``-finfo.max / 2``,
  where ``exp`` is still exactly 0: ``q log q`` and ``q (log q - log p)`` are then an
  exact 0 there, forward and backward. The KL and the entropy share it, so XLA
  computes one ``log q`` for both."""
  log_q = jax.nn.log_softmax(logits, axis=axis)
  return jnp.where(log_q == -np.inf, -np.finfo(log_q.dtype).max / 2, log_q)


def categorical_entropy(logits: ArrayLike, *, axis: int = -1, masked: bool = True) -> jax.Array:
  """The entropy ``H(q) = -sum_k q_k log q_k`` of ``q = softmax(logits)`` along ``axis``.

  In closed form, one value per distribution (sum it over your latents for a VAE's
  entropy). Masked categories (``-inf`` logits) contribute 0, value and gradient
  finite. Computed in float32 (float64 when the input is float64).

  Args:
    logits: unnormalized log-probabilities.
    axis: the category axis.
    masked: True (default): ``-inf`` logits allowed; False: finite logits only,
      the plain formula (see :func:`categorical_kl`).

  Returns:
    The entropy in nats, float32 or wider, of the logits' shape without ``axis``.

  Raises:
    TypeError: non-floating logits, a non-integer ``axis`` or a non-bool ``masked``.
    ValueError: an ``axis`` out of range.

  Example:
    >>> h = gumbax.categorical_entropy(jnp.zeros((2, 4)))  # log K for uniform logits
    >>> print(jnp.round(h, 4))
    [1.3863 1.3863]

  References:
    Shannon, A Mathematical Theory of Communication, Bell System Technical Journal
    27, 1948; Cover, Thomas, Elements of Information Theory, 2nd ed., 2006,
    section 2.1.
  """
  _check_masked(masked)
  logits, _ = _kl_inputs(logits, logits, finite_prior=False)
  axis = _checks.category_axis(axis, logits.ndim)
  log_q = _finite_log_softmax(logits, axis) if masked else jax.nn.log_softmax(logits, axis=axis)
  return -jnp.sum(jnp.exp(log_q) * log_q, axis=axis)


def bernoulli_entropy(logits: ArrayLike) -> jax.Array:
  """The entropy ``-q log q - (1 - q) log(1 - q)`` of ``q = sigmoid(logits)``,
  elementwise.

  The logs are ``log_sigmoid`` of the logits, which must be finite (as in
  :func:`bernoulli_kl`). Computed in float32 (float64 when the input is float64).

  Args:
    logits: Bernoulli logits.

  Returns:
    The entropy in nats, float32 or wider, of the logits' shape.

  Raises:
    TypeError: non-floating logits.

  Example:
    >>> h = gumbax.bernoulli_entropy(jnp.zeros((3, 5))).sum(-1)   # per example
    >>> print(jnp.round(h, 4))                                    # 5 log 2 each
    [3.4657 3.4657 3.4657]

  References:
    Shannon, A Mathematical Theory of Communication, Bell System Technical Journal
    27, 1948; Cover, Thomas, Elements of Information Theory, 2nd ed., 2006,
    section 2.1.
  """
  logits, _ = _kl_inputs(logits, logits, finite_prior=False)
  q = jax.nn.sigmoid(logits)
  return -(q * jax.nn.log_sigmoid(logits) + (1 - q) * jax.nn.log_sigmoid(-logits))


def bernoulli_kl(logits: ArrayLike, prior_logits: ArrayLike) -> jax.Array:
  """``KL(q || p)`` between Bernoulli distributions given by their logits, elementwise.

  ``KL = q (log q - log p) + (1 - q) (log(1 - q) - log(1 - p))`` with ``q =
  sigmoid(logits)`` and ``p = sigmoid(prior_logits)``, the logs taken as
  ``log_sigmoid`` of the logits (stable for large finite ``|logits|``). The logits
  must be finite: an infinite one (a deterministic variable) gives NaN. That is the
  price of computing exactly the plain formula's operations, which keeps the
  results bit-identical inside a larger jitted program (a guard against ``0 *
  inf`` changes how XLA fuses the program, as for :func:`categorical_kl` with
  ``masked=True``). Computed in float32 (float64 when an input is float64).

  Args:
    logits: logits of ``q``.
    prior_logits: logits of ``p``; broadcasts against ``logits`` (NumPy rules).

  Returns:
    The elementwise KL divergence, float32 or wider, of the broadcast shape (sum it
    over your latents for a VAE's KL term).

  Raises:
    TypeError: non-floating logits.
    ValueError: shapes that do not broadcast (the message gives both).

  Example:
    >>> logits = jnp.array([[0.0, 2.0], [-1.0, 1.0]])
    >>> kl = gumbax.bernoulli_kl(logits, jnp.zeros_like(logits)).sum(-1)  # per example
    >>> kl.shape, bool(jnp.all(kl >= 0)), float(gumbax.bernoulli_kl(0.0, 0.0))
    ((2,), True, 0.0)

  References:
    Kullback, Leibler, On Information and Sufficiency, 1951, Annals of
    Mathematical Statistics 22(1); Cover, Thomas, Elements of Information Theory,
    2nd ed., 2006, section 2.3.
  """
  logits, prior_logits = _kl_inputs(logits, prior_logits, finite_prior=False)
  q = jax.nn.sigmoid(logits)
  return (q * (jax.nn.log_sigmoid(logits) - jax.nn.log_sigmoid(prior_logits))
          + (1 - q) * (jax.nn.log_sigmoid(-logits) - jax.nn.log_sigmoid(-prior_logits)))
