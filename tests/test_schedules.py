"""Temperature schedules: values against hand computation, jit/vmap, validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _tolerance import assert_f32_close
from gumbax import schedules

# (schedule, {step: value computed by hand})
CASES = {
    "jang": (
        schedules.exponential_annealing(1.0, 3e-5, 0.5, 1000),
        {0: 1.0, 999: 1.0, 1000: math.exp(-0.03), 2500: math.exp(-0.06),
         22_999: math.exp(-0.66), 30_000: 0.5, -5: 1.0}),
    "every_step": (
        schedules.exponential_annealing(2.0, 0.1, 0.1, 1),
        {0: 2.0, 1: 2.0 * math.exp(-0.1), 10: 2.0 * math.exp(-1.0), 100: 0.1}),
    "linear": (
        schedules.linear(1.0, 0.2, transition_steps=10, transition_begin=5),
        {0: 1.0, 5: 1.0, 10: 0.6, 14: 0.28, 15: 0.2, 1000: 0.2}),
    "linear_up": (schedules.linear(0.5, 1.5, 4), {0: 0.5, 1: 0.75, 4: 1.5, 9: 1.5}),
    "cosine": (
        schedules.cosine(2.0, 0.5, 10),
        {0: 2.0, 2: 0.5 + 0.75 * (1 + math.cos(0.2 * math.pi)), 5: 1.25, 10: 0.5, 20: 0.5}),
    "constant": (schedules.constant(0.3), {0: 0.3, 7: 0.3, 10**6: 0.3}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_at_chosen_steps(name):
  schedule, expected = CASES[name]
  # float32 against hand-computed float64: init + (end - init) * frac cancels (linear's
  # 0.28 = 1 - 0.72), and whether it is fused into an FMA depends on the CPU, so the
  # rounding is a few ulps of max(|init|, |end|), which are among the listed values.
  scale = max(abs(v) for v in expected.values())
  for step, value in expected.items():
    got = schedule(step)
    assert got.dtype == jnp.float32 and got.shape == ()
    assert_f32_close(float(got), value, scale, ulps=8, rtol=1e-6,
                     err_msg=f"{name} at step {step}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_traced_steps_under_jit_and_vmap(name):
  schedule, expected = CASES[name]
  steps = np.array(sorted(expected), np.int32)
  want = np.array([expected[s] for s in steps], np.float32)
  traces = []
  jitted = jax.jit(lambda step: traces.append(step) or schedule(step))
  got = np.array([float(jitted(jnp.int32(s))) for s in steps])
  scale = np.max(np.abs(want))  # as in test_values_at_chosen_steps: ulps of |init|, |end|
  assert_f32_close(got, want, scale, ulps=8, rtol=1e-6)
  assert len(traces) == 1 and isinstance(traces[0], jax.core.Tracer)   # one trace, any step
  assert_f32_close(jax.jit(jax.vmap(schedule))(steps), want, scale, ulps=8, rtol=1e-6)
  batch = schedule(steps.reshape(2, -1) if steps.size % 2 == 0 else steps)
  assert batch.dtype == jnp.float32 and batch.size == steps.size


def test_inside_a_scanned_training_loop():
  schedule = schedules.exponential_annealing(1.0, 0.5, 0.2, 2)

  def body(carry, step):
    return carry + schedule(step), schedule(step)

  total, values = jax.jit(lambda: jax.lax.scan(body, 0.0, jnp.arange(6)))()
  want = [1.0, 1.0, math.exp(-1.0), math.exp(-1.0), 0.2, 0.2]
  np.testing.assert_allclose(values, want, rtol=1e-6)
  np.testing.assert_allclose(total, sum(want), rtol=1e-6)


@pytest.mark.parametrize("factory, kwargs, argument, error", [
    (schedules.exponential_annealing, {"init_value": 0.0}, "init_value", ValueError),
    (schedules.exponential_annealing, {"floor": -0.5}, "floor", ValueError),
    (schedules.exponential_annealing, {"rate": -1e-3}, "rate", ValueError),
    (schedules.exponential_annealing, {"every": 0}, "every", ValueError),
    (schedules.exponential_annealing, {"every": 2.5}, "every", TypeError),
    (schedules.linear, {"init_value": 1.0, "end_value": 0.0, "transition_steps": 5}, "end_value", ValueError),
    (schedules.linear, {"init_value": 1.0, "end_value": 0.5, "transition_steps": 0},
     "transition_steps", ValueError),
    (schedules.linear, {"init_value": 1.0, "end_value": 0.5, "transition_steps": 5,
                        "transition_begin": -1}, "transition_begin", ValueError),
    (schedules.cosine, {"init_value": float("nan"), "end_value": 0.5, "decay_steps": 5},
     "init_value", ValueError),
    (schedules.cosine, {"init_value": 1.0, "end_value": 0.5, "decay_steps": True}, "decay_steps", TypeError),
    (schedules.constant, {"value": -1.0}, "value", ValueError),
])
def test_invalid_arguments_are_named(factory, kwargs, argument, error):
  # One rule: TypeError for a wrong type (2.5, True), ValueError for a wrong value.
  with pytest.raises(error, match=f"`{argument}`"):
    factory(**kwargs)
