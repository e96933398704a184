"""Small multilayer perceptrons as plain parameter pytrees (no framework needed).

A network is a list of dense layers ``{"w": (fan_in, fan_out), "b": (fan_out,)}``;
:func:`mlp_init` builds one from its layer sizes and :func:`mlp_apply` evaluates it
over the last axis of its input (any number of leading axes). A layer built with
``fan_out=None`` has ``w`` of shape ``(fan_in,)`` and a scalar ``b``: it maps each
input vector to one number (a baseline, a control variate). Weights come from any
``jax.nn.initializers``-style function ``init(key, shape, dtype)``; the default is
:func:`lecun_normal`. Used by the estimators' control-variate networks; usable for
the encoder and decoder of a model written without Flax.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from gumbax import _checks

__all__ = ["dense_apply", "dense_init", "lecun_normal", "lecun_normal_untruncated",
           "mlp_apply", "mlp_init"]

# The standard deviation of a standard normal truncated to [-2, 2].
_TRUNCATED_STD = .87962566103423978


def lecun_normal(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
  """LeCun-normal weights: a normal truncated at two standard deviations, of variance
  ``1 / fan_in`` (``fan_in = shape[0]``).

  The same numbers as ``jax.nn.initializers.lecun_normal()(key, shape, dtype)`` for a
  2-D ``shape``: JAX numbers random bits in row-major order of the flattened shape,
  so the normal is drawn for ``(prod(shape),)`` and reshaped. Drawn flat, it
  compiles fast under ``vmap`` (XLA's CPU compiler takes about ten times longer over
  noise of rank 3 or more, which a ``(m, n)`` draw becomes when vectorized over
  seeds).

  Args:
    key: a PRNG key.
    shape: the weight's shape, ``(fan_in, ...)``.
    dtype: a floating dtype.

  Returns:
    An array of ``shape`` and ``dtype``.

  Example:
    >>> w = gumbax.networks.lecun_normal(jax.random.key(0), (784, 512))
    >>> w.shape, w.dtype, bool(jnp.abs(w).max() <= 2 / jnp.sqrt(784) / 0.87962566)
    ((784, 512), dtype('float32'), True)

  References:
    LeCun, Bottou, Orr, Mueller, Efficient BackProp, in Neural Networks: Tricks of
    the Trade, 1998, section 4.6; Klambauer, Unterthiner, Mayr, Hochreiter,
    Self-Normalizing Neural Networks, 2017 (arXiv 1706.02515), the truncated form.
  """
  shape = _weight_shape(shape)
  variance = jnp.array(1.0 / shape[0], dtype)
  stddev = jnp.sqrt(variance) / jnp.array(_TRUNCATED_STD, dtype)
  flat = jax.random.truncated_normal(key, -2, 2, (math.prod(shape),), dtype)
  return flat.reshape(shape) * stddev


def lecun_normal_untruncated(key: jax.Array, shape: Sequence[int],
                             dtype: Any = jnp.float32) -> jax.Array:
  """Normal weights of standard deviation ``1 / sqrt(fan_in)`` (``fan_in =
  shape[0]``), not truncated: LeCun's original prescription.

  Args:
    key: a PRNG key.
    shape: the weight's shape, ``(fan_in, ...)``.
    dtype: a floating dtype.

  Returns:
    An array of ``shape`` and ``dtype``.

  Example:
    >>> w = gumbax.networks.lecun_normal_untruncated(jax.random.key(0), (4, 16))
    >>> w.shape
    (4, 16)

  References:
    LeCun, Bottou, Orr, Mueller, Efficient BackProp, in Neural Networks: Tricks of
    the Trade, 1998, section 4.6.
  """
  shape = _weight_shape(shape)
  scale = 1.0 / jnp.sqrt(jnp.asarray(shape[0], dtype))
  return jax.random.normal(key, shape, dtype) * scale


def _weight_shape(shape) -> tuple[int, ...]:
  shape = tuple(shape)
  if not shape:
    raise ValueError("A weight's `shape` needs at least one axis (fan_in); got ().")
  for d in shape:
    _checks.check_int(d, "shape", 1)
  return shape


def dense_init(key: jax.Array, fan_in: int, fan_out: int | None, *,
               weight_init: Callable = lecun_normal, dtype: Any = jnp.float32) -> dict:
  """One dense layer ``{"w": weight_init(key, (fan_in, fan_out)), "b": zeros}``.

  Args:
    key: a PRNG key, given to ``weight_init`` as it is (None is allowed when
      ``weight_init`` ignores it, e.g. ``jax.nn.initializers.zeros``).
    fan_in: input width (an int >= 1).
    fan_out: output width (an int >= 1), or None for one number per input vector
      (``w`` of shape ``(fan_in,)``, scalar ``b``).
    weight_init: ``init(key, shape, dtype)``, e.g. :func:`lecun_normal` or any
      ``jax.nn.initializers`` initializer.
    dtype: the parameters' dtype.

  Returns:
    ``{"w": ..., "b": ...}`` with zero biases.

  Raises:
    TypeError, ValueError: a width that is not an int >= 1.

  Example:
    >>> layer = gumbax.networks.dense_init(jax.random.key(0), 784, 512)
    >>> layer["w"].shape, layer["b"].shape
    ((784, 512), (512,))

  References:
    LeCun, Bottou, Orr, Mueller, Efficient BackProp, in Neural Networks: Tricks of
    the Trade, 1998 (the default initialization).
  """
  _checks.check_int(fan_in, "fan_in", 1)
  if fan_out is not None:
    _checks.check_int(fan_out, "fan_out", 1)
  out = () if fan_out is None else (fan_out,)
  return {"w": weight_init(key, (fan_in,) + out, dtype), "b": jnp.zeros(out, dtype)}


def dense_apply(layer: dict, x: jax.Array) -> jax.Array:
  """``x @ w + b`` over the last axis of ``x``, for any number of leading axes.

  The bias is reshaped to the output's rank, so no implicit rank promotion happens.

  Args:
    layer: ``{"w", "b"}`` from :func:`dense_init`.
    x: inputs of shape ``batch + (fan_in,)``.

  Returns:
    ``batch + (fan_out,)``, or ``batch`` for a layer built with ``fan_out=None``.

  Example:
    >>> layer = gumbax.networks.dense_init(jax.random.key(0), 3, 2)
    >>> gumbax.networks.dense_apply(layer, jnp.ones((5, 7, 3))).shape
    (5, 7, 2)

  References:
    Rumelhart, Hinton, Williams, Learning representations by back-propagating
    errors, Nature 323, 1986.
  """
  b = layer["b"]
  h = x @ layer["w"]
  return h + b.reshape((1,) * (h.ndim - b.ndim) + b.shape)


def mlp_init(key: jax.Array, sizes: Sequence[int | None], *,
             weight_init: Callable = lecun_normal, dtype: Any = jnp.float32) -> list[dict]:
  """Dense layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` with zero biases.

  Layer ``i`` gets ``jax.random.split(key, len(sizes) - 1)[i]``.

  Args:
    key: a PRNG key.
    sizes: the widths, input first (ints >= 1; the last may be None for one number
      per input vector, as in :func:`dense_init`).
    weight_init: ``init(key, shape, dtype)`` for every weight (default
      :func:`lecun_normal`).
    dtype: the parameters' dtype.

  Returns:
    A list of ``len(sizes) - 1`` layers ``{"w", "b"}``.

  Raises:
    ValueError: fewer than two sizes; TypeError, ValueError: a bad width.

  Example:
    >>> layers = gumbax.networks.mlp_init(jax.random.key(0), [784, 512, 256, 200])
    >>> [layer["w"].shape for layer in layers]
    [(784, 512), (512, 256), (256, 200)]

  References:
    LeCun, Bottou, Orr, Mueller, Efficient BackProp, in Neural Networks: Tricks of
    the Trade, 1998 (the default initialization).
  """
  sizes = list(sizes)
  if len(sizes) < 2:
    raise ValueError(f"`sizes` needs an input and an output width; got {sizes!r}.")
  if any(s is None for s in sizes[:-1]):
    raise ValueError(f"Only the last of `sizes` may be None; got {sizes!r}.")
  keys = jax.random.split(key, len(sizes) - 1)
  return [dense_init(k, m, n, weight_init=weight_init, dtype=dtype)
          for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def mlp_apply(layers: Sequence[dict], x: jax.Array,
              activation: Callable[[jax.Array], jax.Array] = jax.nn.relu) -> jax.Array:
  """The MLP: :func:`dense_apply` for each layer, ``activation`` between layers and
  none after the last.

  Args:
    layers: from :func:`mlp_init` (or :func:`dense_init` layers in a list).
    x: inputs of shape ``batch + (sizes[0],)``.
    activation: the hidden layers' nonlinearity (default ReLU).

  Returns:
    ``batch + (sizes[-1],)`` (``batch`` when the last size is None).

  Example:
    >>> layers = gumbax.networks.mlp_init(jax.random.key(0), [3, 16, 2])
    >>> gumbax.networks.mlp_apply(layers, jnp.ones((8, 3)), activation=jnp.tanh).shape
    (8, 2)

  References:
    Rumelhart, Hinton, Williams, Learning representations by back-propagating
    errors, Nature 323, 1986.
  """
  for i, layer in enumerate(layers):
    x = dense_apply(layer, x)
    if i < len(layers) - 1:
      x = activation(x)
  return x
