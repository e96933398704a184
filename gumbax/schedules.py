"""Temperature schedules: optax-style ``step -> temperature`` callables.

Each factory validates its (static) arguments and returns a pure function of the
step count that works on Python ints, NumPy and JAX integer arrays, traced values
inside ``jit`` and batches of steps, and returns float32 arrays of the step's shape.
Negative steps are treated as step 0. Pass the value to a layer or a sampler at each
step: ``layer(x, temperature=schedule(step))``.

References:
  optax's schedules (``optax.exponential_decay``, ``optax.linear_schedule``,
  ``optax.cosine_decay_schedule``) for the style.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gumbax import _checks

__all__ = ["Schedule", "constant", "cosine", "exponential_annealing", "linear"]

Schedule = Callable[[ArrayLike], jax.Array]


def _positive(value, name: str) -> float:
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not math.isfinite(value) or value <= 0):
    raise ValueError(f"`{name}` must be a finite number > 0; got {value!r}.")
  return float(value)


def _steps(step: ArrayLike) -> jax.Array:
  """The step count as float32, clipped at 0 (computed exactly in integers first)."""
  step = jnp.asarray(step)
  if not (jnp.issubdtype(step.dtype, jnp.integer) or jnp.issubdtype(step.dtype, jnp.floating)):
    raise TypeError(f"`step` must be an integer (or float) count; got dtype {step.dtype}.")
  return jnp.maximum(step, 0)


def exponential_annealing(init_value: float = 1.0, rate: float = 3e-5, floor: float = 0.5,
                          every: int = 1000) -> Schedule:
  """Jang et al.'s annealing, ``max(floor, init_value * exp(-rate * t))``.

  ``t = (step // every) * every``: the temperature is updated every ``every`` steps
  (Jang et al. choose the rate from {1e-5, 1e-4} and ``every`` from {500, 1000} on
  validation, with floor 0.5; their notebook uses rate 3e-5 every 1000 steps).

  Args:
    init_value: the temperature at step 0, > 0.
    rate: the annealing rate per step, >= 0.
    floor: the smallest temperature, > 0.
    every: update period in steps, an int >= 1 (1: a smooth schedule).

  Returns:
    A function ``step -> temperature`` (float32 array of the step's shape).

  Example:
    >>> schedule = gumbax.schedules.exponential_annealing(1.0, 3e-5, 0.5, 1000)
    >>> # 1.0 for steps 0..999, then exp(-0.03), ..., never below the floor 0.5
    >>> [round(float(schedule(step)), 4) for step in (0, 999, 1000, 100_000)]
    [1.0, 1.0, 0.9704, 0.5]

  References:
    Jang, Gu, Poole, Categorical Reparameterization with Gumbel-Softmax, 2017
    (arXiv 1611.01144), section 4.
  """
  init_value = _positive(init_value, "init_value")
  floor = _positive(floor, "floor")
  every = _checks.check_int(every, "every", 1)
  if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not (
      math.isfinite(rate) and rate >= 0):
    raise ValueError(f"`rate` must be a finite number >= 0; got {rate!r}.")
  rate = float(rate)

  def schedule(step: ArrayLike) -> jax.Array:
    step = _steps(step)
    t = ((step // every) * every).astype(jnp.float32)
    return jnp.maximum(jnp.float32(floor), init_value * jnp.exp(-rate * t)).astype(jnp.float32)

  return schedule


def linear(init_value: float, end_value: float, transition_steps: int,
           transition_begin: int = 0) -> Schedule:
  """Linear interpolation from ``init_value`` to ``end_value``.

  ``init_value`` until ``transition_begin``, then linear for ``transition_steps``
  steps, then ``end_value``.

  Args:
    init_value: the starting temperature, > 0.
    end_value: the final temperature, > 0.
    transition_steps: length of the ramp, an int >= 1.
    transition_begin: steps before the ramp starts, an int >= 0.

  Returns:
    A function ``step -> temperature`` (float32 array of the step's shape).

  Example:
    >>> schedule = gumbax.schedules.linear(1.0, 0.1, transition_steps=10_000)
    >>> [round(float(schedule(step)), 4) for step in (0, 5_000, 10_000, 20_000)]
    [1.0, 0.55, 0.1, 0.1]

  References:
    optax.linear_schedule.
  """
  init_value = _positive(init_value, "init_value")
  end_value = _positive(end_value, "end_value")
  transition_steps = _checks.check_int(transition_steps, "transition_steps", 1)
  transition_begin = _checks.check_int(transition_begin, "transition_begin", 0)

  def schedule(step: ArrayLike) -> jax.Array:
    step = _steps(step)
    frac = jnp.clip((step - transition_begin).astype(jnp.float32) / transition_steps, 0.0, 1.0)
    return (init_value + (end_value - init_value) * frac).astype(jnp.float32)

  return schedule


def cosine(init_value: float, end_value: float, decay_steps: int) -> Schedule:
  """Cosine decay from ``init_value`` to ``end_value`` over ``decay_steps`` steps.

  ``end_value + (init_value - end_value) * (1 + cos(pi * min(step, decay_steps) /
  decay_steps)) / 2``, constant at ``end_value`` afterwards.

  Args:
    init_value: the starting temperature, > 0.
    end_value: the final temperature, > 0.
    decay_steps: length of the decay, an int >= 1.

  Returns:
    A function ``step -> temperature`` (float32 array of the step's shape).

  Example:
    >>> schedule = gumbax.schedules.cosine(2.0, 0.2, decay_steps=5_000)
    >>> [round(float(schedule(step)), 4) for step in (0, 2_500, 5_000, 10_000)]
    [2.0, 1.1, 0.2, 0.2]

  References:
    Loshchilov, Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts, 2017
    (arXiv 1608.03983); optax.cosine_decay_schedule.
  """
  init_value = _positive(init_value, "init_value")
  end_value = _positive(end_value, "end_value")
  decay_steps = _checks.check_int(decay_steps, "decay_steps", 1)

  def schedule(step: ArrayLike) -> jax.Array:
    step = jnp.minimum(_steps(step), decay_steps).astype(jnp.float32)
    weight = 0.5 * (1.0 + jnp.cos(jnp.pi * step / decay_steps))
    return (end_value + (init_value - end_value) * weight).astype(jnp.float32)

  return schedule


def constant(value: float) -> Schedule:
  """A constant temperature.

  Args:
    value: the temperature, > 0.

  Returns:
    A function ``step -> value`` (float32 array of the step's shape).

  Example:
    >>> schedule = gumbax.schedules.constant(0.5)
    >>> schedule(jnp.arange(3)).tolist()  # one value per step
    [0.5, 0.5, 0.5]

  References:
    optax.constant_schedule.
  """
  value = _positive(value, "value")

  def schedule(step: ArrayLike) -> jax.Array:
    return jnp.full(jnp.shape(_steps(step)), value, jnp.float32)

  return schedule
