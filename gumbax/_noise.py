"""Random noise drawn for the flattened shape (private helper).

``draw(jax.random.gumbel, key, shape, dtype)`` returns exactly
``jax.random.gumbel(key, shape, dtype)``: JAX numbers the random bits of a draw in
row-major order of the flattened shape (with either setting of
``jax_threefry_partitionable``), and the samplers used here are elementwise
transforms of those bits. The flat draw exists for the compiler: XLA's CPU backend
compiles the partitionable threefry over an array of rank 3 or more about ten times
more slowly than over a vector (seconds for a ``(20, 409, 20, 10)`` draw against under
one), and a sampler under ``vmap`` adds a rank.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax


def draw(sampler: Callable[..., jax.Array], key: Any, shape: tuple[int, ...], *args: Any,
         **kwargs: Any) -> jax.Array:
  """``sampler(key, shape, *args, **kwargs)``, drawn for ``(prod(shape),)`` and reshaped.

  ``sampler`` must be an elementwise ``jax.random`` sampler (``uniform``, ``gumbel``,
  ``logistic``, ``bits``, ``normal``, ``truncated_normal`` with scalar bounds).
  """
  shape = tuple(shape)
  if len(shape) <= 1:
    return sampler(key, shape, *args, **kwargs)
  return sampler(key, (math.prod(shape),), *args, **kwargs).reshape(shape)
