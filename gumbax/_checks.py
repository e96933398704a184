"""Eager validation of static arguments and shared dtype rules (private).

Everything here runs at trace time on static information only (shapes, dtypes,
Python numbers), so it works unchanged under ``jit``, ``vmap`` and ``grad``.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Differences between perturbed scores below -_SCORE_FLOOR are clamped to it before
# dividing by the temperature. exp(-_SCORE_FLOOR / tau) is exactly 0 in float32 for
# every tau < 1e28, so values are unchanged, but no infinity ever reaches the
# temperature's gradient (0 * inf would be NaN).
SCORE_FLOOR = 1e30

# Temperatures below this (and traced non-positive or NaN ones) are read as it: the
# relaxed sample is then the hard one-hot and no gradient overflows (1/tau^2 stays
# finite in float32).
MIN_TEMPERATURE = 1e-10


def float_dtype(x: jax.Array, name: str) -> np.dtype:
  """Returns the dtype of ``x`` after checking that it is floating point."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"`{name}` must have a floating-point dtype (float16, bfloat16, float32 or "
        f"float64); got dtype {dtype}. Cast it first, e.g. `{name}.astype(jnp.float32)`.")
  return np.dtype(dtype)


def compute_dtype(dtype: Any) -> np.dtype:
  """The dtype noise is drawn and arithmetic is done in: float32, or float64."""
  return np.dtype(jnp.float64) if np.dtype(dtype) == np.float64 else np.dtype(jnp.float32)


def as_logits(logits: Any, name: str = "logits") -> tuple[jax.Array, np.dtype]:
  """Converts ``logits`` to an array; returns it with its (floating) dtype."""
  logits = jnp.asarray(logits)
  return logits, float_dtype(logits, name)


def category_axis(axis: Any, ndim: int, name: str = "logits") -> int:
  """Normalizes ``axis`` to a non-negative index into an array of rank ``ndim``."""
  if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
    raise TypeError(f"`axis` must be an int; got {axis!r} of type {type(axis).__name__}.")
  if ndim == 0:
    raise ValueError(
        f"`{name}` must have at least one dimension (the category axis); got a scalar. "
        "For a Bernoulli variable use the relaxed_bernoulli / conditional_logistic "
        "functions.")
  if not -ndim <= axis < ndim:
    raise ValueError(
        f"`axis`={axis} is out of range for `{name}` with {ndim} dimension(s); "
        f"expected an int in [{-ndim}, {ndim - 1}].")
  return int(axis) % ndim


def check_positive_static(value: Any, name: str) -> None:
  """Raises ValueError if a static (Python / NumPy) value is not strictly positive.

  Traced values and JAX arrays are not inspected (that would need a host sync);
  the functions document what they do with non-positive traced values.
  """
  if isinstance(value, jax.Array) or isinstance(value, jax.core.Tracer):
    return
  if isinstance(value, bool):
    raise TypeError(f"`{name}` must be a positive number or array; got the bool {value!r}.")
  if isinstance(value, (numbers.Real, np.ndarray, np.generic)):
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
      raise TypeError(f"`{name}` must be real-valued; got dtype {arr.dtype}.")
    if arr.size and not np.all(arr > 0):
      bad = repr(value) if arr.ndim == 0 else f"non-positive entries {arr[~(arr > 0)].ravel()[:3].tolist()}"
      raise ValueError(
          f"`{name}` must be > 0 (a temperature); got {bad}. Use a small positive "
          "value such as 0.1 for a nearly discrete sample.")


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _upcast_saturating_grad(x: jax.Array, dtype: np.dtype) -> jax.Array:
  """``x.astype(dtype)`` whose gradient saturates at the input dtype's finite range.

  Used for float16/bfloat16 temperatures: the temperature's gradient is computed in
  float32 and can exceed 65504 at low temperatures; it is clipped to the largest
  finite value of the input dtype instead of overflowing to inf. (Being a
  ``custom_vjp``, it supports reverse-mode differentiation only; keep learnable
  temperatures in float32 for forward-mode use, as mixed-precision practice does.)
  """
  return x.astype(dtype)


def _upcast_fwd(x, dtype):
  return x.astype(dtype), jnp.zeros((0,), x.dtype)


def _upcast_bwd(dtype, witness, cotangent):
  big = jnp.finfo(witness.dtype).max
  return (jnp.clip(cotangent, -big, big).astype(witness.dtype),)


_upcast_saturating_grad.defvjp(_upcast_fwd, _upcast_bwd)


def temperature_array(temperature: Any, batch_shape: tuple[int, ...],
                      dtype: np.dtype) -> jax.Array:
  """Checks a temperature and broadcasts it to ``batch_shape``.

  Args:
    temperature: Python number or array broadcastable to ``batch_shape`` (the
      logits' shape without the category axis).
    batch_shape: the shape the temperature must broadcast to.
    dtype: compute dtype (float32 or float64).

  Returns:
    The temperature in ``dtype`` with rank ``len(batch_shape)`` (size-1 dimensions
    are left unbroadcast, so a scalar costs nothing per element). Entries below
    ``MIN_TEMPERATURE`` (1e-10), traced non-positive and NaN ones included, are
    replaced by it and get zero gradient, so the relaxed sample becomes the hard one
    and no NaN or inf appears.
  """
  check_positive_static(temperature, "temperature")
  tau = jnp.asarray(temperature)
  if not (jnp.issubdtype(tau.dtype, jnp.floating) or jnp.issubdtype(tau.dtype, jnp.integer)):
    raise TypeError(f"`temperature` must be real-valued; got dtype {tau.dtype}.")
  try:
    np.broadcast_shapes(tau.shape, batch_shape)
  except ValueError:
    raise ValueError(
        f"`temperature` of shape {tau.shape} does not broadcast against the logits' "
        f"shape without the category axis, {batch_shape} (NumPy broadcasting aligns "
        "trailing dimensions: a per-example temperature for logits of shape (B, N, K) "
        "has shape (B, 1); a per-latent one (N,) or (B, N)).") from None
  if np.broadcast_shapes(tau.shape, batch_shape) != tuple(batch_shape):
    raise ValueError(
        f"`temperature` of shape {tau.shape} would enlarge the sample beyond the logits' "
        f"shape without the category axis, {batch_shape}.")
  tau = _upcast_saturating_grad(tau, dtype) if tau.dtype.itemsize < 4 else tau.astype(dtype)
  tau = jnp.where(tau > MIN_TEMPERATURE, tau, MIN_TEMPERATURE)
  return tau.reshape((1,) * (len(batch_shape) - tau.ndim) + tau.shape)
