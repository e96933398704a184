"""Eager validation of static arguments and shared dtype rules (private).

Everything here runs at trace time, on static information (shapes, dtypes) and on
values only where they are concrete (Python and NumPy numbers, concrete
``jax.Array`` s; see :func:`is_concrete`), so it works unchanged under ``jit``,
``vmap`` and ``grad``, where traced values are left unchecked.
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


def check_int(value: Any, name: str, minimum: int) -> int:
  """Checks that ``value`` is an integer >= ``minimum``; returns it as a Python int.

  The one rule for integer arguments: ``TypeError`` when ``value`` is not an integer
  (``bool`` is not one; Python ints and NumPy integer scalars are), ``ValueError``
  when it is below ``minimum``. The message names the argument, the value received
  and what was expected.
  """
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(
        f"`{name}` must be an int >= {minimum}; got {value!r} of type "
        f"{type(value).__name__}.")
  if value < minimum:
    raise ValueError(f"`{name}` must be an int >= {minimum}; got {value!r}.")
  return int(value)


def is_concrete(x: Any) -> bool:
  """Whether ``x`` holds values that can be read on the host now.

  True for Python numbers, NumPy scalars and arrays, (nested lists of) these, and
  concrete ``jax.Array`` s, including constants closed over by a ``jit`` -ed function;
  False when any leaf is a tracer (an argument of a function under ``jit``, ``vmap``
  or ``grad``) or an array that is not fully addressable from this process. Reading a
  concrete ``jax.Array`` waits for it to be computed (a device-to-host sync), which
  is what eager calls pay for their checks.
  """
  for leaf in jax.tree_util.tree_leaves(x):
    if isinstance(leaf, jax.core.Tracer):
      return False
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return False
  return True


def _show(value: Any, arr: np.ndarray) -> str:
  """A short description of a scalar value for error messages."""
  if isinstance(value, (numbers.Number, np.generic)):
    return repr(value)
  return f"{arr.item()!r} (as a {type(value).__name__} of dtype {arr.dtype})"


def check_positive_static(value: Any, name: str) -> None:
  """Raises unless a concrete ``value`` is real, finite and strictly positive.

  Checks Python numbers, NumPy scalars and arrays, lists of numbers and concrete
  ``jax.Array`` s alike (every entry of an array must pass); traced values (under
  ``jit``, ``vmap``, ``grad``) cannot be inspected and are not checked: the
  functions document what they do with non-positive or NaN traced values.
  """
  if not is_concrete(value):
    return
  if isinstance(value, bool):
    raise TypeError(f"`{name}` must be a positive number or array; got the bool {value!r}.")
  if not isinstance(value, (numbers.Number, np.ndarray, np.generic, jax.Array, list, tuple)):
    return
  try:
    arr = np.asarray(value)
  except (TypeError, ValueError):
    return  # ragged lists and the like: left to jnp.asarray's own error
  if (arr.dtype == bool or not np.issubdtype(arr.dtype, np.number)
      or np.issubdtype(arr.dtype, np.complexfloating)) and not _is_ml_float(arr.dtype):
    raise TypeError(f"`{name}` must be real-valued; got dtype {arr.dtype}.")
  arr = arr.astype(np.float64)
  ok = np.isfinite(arr) & (arr > 0)
  if arr.size and not np.all(ok):
    if arr.ndim == 0:
      bad = _show(value, arr)
    else:
      entries = arr[~ok].ravel()
      bad = (f"{entries.size} non-positive or non-finite entries of {arr.size} in a "
             f"{type(value).__name__} of shape {arr.shape}, e.g. {entries[:3].tolist()}")
    raise ValueError(
        f"`{name}` must be > 0 and finite (a temperature); got {bad}. Use a small "
        "positive value such as 0.1 for a nearly discrete sample.")


def _is_ml_float(dtype: np.dtype) -> bool:
  """bfloat16 and friends, which NumPy does not count as np.number."""
  try:
    return bool(jnp.issubdtype(dtype, jnp.floating))
  except TypeError:
    return False


@functools.partial(jax.jit, static_argnums=1)
def _row_stats(logits: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
  """Per row along ``axis``: whether it holds a NaN, and its number of finite-or-+inf
  (unmasked) categories."""
  return (jnp.any(jnp.isnan(logits), axis=axis),
          jnp.sum(logits > -jnp.inf, axis=axis, dtype=jnp.int32))


def check_subset_size(k: Any, num_classes: int, axis: int) -> int:
  """``k`` as an int in ``[1, num_classes]`` (the categories along ``axis``): the size
  of a subset drawn without replacement. TypeError for a non-integer, ValueError out
  of range."""
  k = check_int(k, "k", 1)
  if k > num_classes:
    raise ValueError(
        f"`k`={k} must be between 1 and the number of categories along axis {axis}, "
        f"{num_classes}.")
  return k


def check_rows(raw_logits: Any, axis: int, *, k: int | None = None,
               name: str = "logits") -> None:
  """Refuses concrete categorical logits with a degenerate row (or too few categories).

  A row (the entries along ``axis``) is degenerate when it holds a NaN or every
  entry is ``-inf``: it defines no distribution. With ``k``, also refuses rows with
  fewer than ``k`` unmasked (not ``-inf``) categories (``gumbel_top_k``). Traced
  logits are not checked; the samplers then return NaN rows (``-1`` indices for
  ``gumbel_top_k``).

  Args:
    raw_logits: the logits as the caller passed them (concreteness is judged on
      them, before any conversion).
    axis: the normalized category axis.
    k: the number of categories that must be unmasked in every row, if any.
    name: the argument's name for messages.
  """
  if not is_concrete(raw_logits):
    return
  with jax.ensure_compile_time_eval():
    has_nan, unmasked = jax.device_get(_row_stats(jnp.asarray(raw_logits), axis))
  where = lambda mask: tuple(int(i) for i in np.argwhere(mask)[0])
  if np.any(has_nan):
    raise ValueError(
        f"`{name}` has a row with NaN along the category axis {axis}, at batch index "
        f"{where(has_nan)} (the index into the shape without axis {axis}); a "
        f"categorical distribution needs NaN-free logits. ({int(np.sum(has_nan))} such "
        "row(s). Traced logits are not checked: such rows give NaN samples.)")
  if np.any(unmasked == 0):
    raise ValueError(
        f"`{name}` has a row whose every entry is -inf (masked) along the category "
        f"axis {axis}, at batch index {where(unmasked == 0)} (the index into the shape "
        f"without axis {axis}); at least one category per row must be unmasked. "
        f"({int(np.sum(unmasked == 0))} such row(s). Traced logits are not checked: "
        "such rows give NaN samples.)")
  if k is not None and unmasked.size and k > int(np.min(unmasked)):
    raise ValueError(
        f"`k`={k} exceeds the number of unmasked (not -inf) categories of some row of "
        f"`{name}`: the smallest count along axis {axis} is {int(np.min(unmasked))}, at "
        f"batch index {where(unmasked == np.min(unmasked))}. Gumbel-top-k samples "
        "without replacement, so k must be at most that count.")


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

  Raises:
    ValueError: a concrete temperature (Python or NumPy number or array, concrete
      ``jax.Array``) with an entry that is <= 0, NaN or infinite, or a shape that does
      not broadcast to ``batch_shape``. Traced temperatures are not checked.
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
