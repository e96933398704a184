"""Bad values are refused whatever their container; traced ones follow the docs.

1. Temperatures: concrete ones (Python, NumPy, concrete ``jax.Array``, arrays of
   them) must be finite and > 0; traced ones are unchecked and act as 1e-10.
2. ``conditional_gumbel`` / ``conditional_logistic`` refuse concrete samples that
   are not one-hot / binary.
3. Degenerate categorical rows (all ``-inf``, or holding NaN): ``ValueError`` for
   concrete logits in every categorical sampler; all-NaN rows (``-1`` indices for
   ``gumbel_top_k``) when traced, so ``hard == gumbel_max`` on every row.
4. ``gumbel_top_k`` refuses ``k`` above a row's unmasked count for concrete logits.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gumbax
from _tolerance import assert_f32_close
from gumbax import _checks

KEY = jax.random.key(0)
LOGITS = np.array([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -3.0, 0.2], [0.0, -np.inf, 0.3, 0.0]],
                  np.float32)

# --------------------------------------------------------------------------------
# 1. Temperatures.

# Every public function that validates a temperature, as f(temperature) on LOGITS.
_Y = np.full(LOGITS.shape, 0.25, np.float32)
TEMPERATURE_FNS = {
    "gumbel_softmax": lambda t: gumbax.gumbel_softmax(KEY, LOGITS, t),
    "gumbel_softmax_hard": lambda t: gumbax.gumbel_softmax(KEY, LOGITS, t, hard=True),
    "log_gumbel_softmax": lambda t: gumbax.log_gumbel_softmax(KEY, LOGITS, t),
    "relaxed_bernoulli": lambda t: gumbax.relaxed_bernoulli(KEY, LOGITS[0], t),
    "straight_through": lambda t: gumbax.straight_through(KEY, LOGITS, temperature=t),
    "straight_through_identity": lambda t: gumbax.straight_through(
        KEY, LOGITS, temperature=t, backward="identity"),
    "concrete_log_prob": lambda t: gumbax.concrete_log_prob(_Y, LOGITS, t),
    "exp_concrete_log_prob": lambda t: gumbax.exp_concrete_log_prob(np.log(_Y), LOGITS, t),
    "binary_concrete_log_prob": lambda t: gumbax.binary_concrete_log_prob(
        _Y[0], LOGITS[0], t),
    "binary_concrete_logit_log_prob": lambda t: gumbax.binary_concrete_logit_log_prob(
        _Y[0], LOGITS[0], t),
}

# (temperature, text the message must quote). Scalars for every function; the
# per-row arrays have shape (3,), which fits every function above but
# relaxed_bernoulli / the binary densities (shape (4,)), handled below.
BAD_SCALARS = [
    (jnp.array(-1.0), "-1.0"),                  # the example: a concrete jax.Array
    (jnp.array(0.0), "0.0"),
    (jnp.array(0, jnp.int32), "0"),
    (jnp.array(jnp.nan), "nan"),
    (jnp.array(jnp.inf), "inf"),
    (jnp.array(-2.0, jnp.bfloat16), "-2.0"),
    (np.float32(-1.0), "-1.0"),
    (np.array(0.0), "0.0"),
    (-1.0, "-1.0"),
    (float("nan"), "nan"),
    (float("inf"), "inf"),
]


@pytest.mark.parametrize("name", sorted(TEMPERATURE_FNS))
@pytest.mark.parametrize("bad,quoted", BAD_SCALARS, ids=lambda v: repr(v)[:24])
def test_concrete_bad_temperature_is_refused_in_any_container(name, bad, quoted):
  with pytest.raises(ValueError) as info:
    TEMPERATURE_FNS[name](bad)
  message = str(info.value)
  assert "`temperature`" in message and "> 0" in message, message
  assert quoted in message, message


@pytest.mark.parametrize("name", sorted(TEMPERATURE_FNS))
def test_concrete_array_of_temperatures_with_one_bad_entry_is_refused(name):
  n = 4 if name.startswith(("relaxed", "binary")) else 3
  for make in (jnp.asarray, np.asarray, list):
    tau = make([0.5] * (n - 1) + [-0.25])
    with pytest.raises(ValueError) as info:
      TEMPERATURE_FNS[name](tau)
    message = str(info.value)
    assert "`temperature`" in message and "-0.25" in message, message
    assert "1 non-positive or non-finite entries" in message, message


@pytest.mark.parametrize("name", sorted(TEMPERATURE_FNS))
def test_good_concrete_temperatures_are_accepted_alike(name):
  fn = TEMPERATURE_FNS[name]
  ref = np.asarray(fn(0.5))
  for tau in (np.float32(0.5), np.array(0.5), jnp.array(0.5), jnp.array(0.5, jnp.bfloat16)):
    np.testing.assert_array_equal(np.asarray(fn(tau)), ref)


@pytest.mark.parametrize("name", sorted(TEMPERATURE_FNS))
def test_traced_bad_temperature_is_not_checked(name):
  """Under jit, vmap and grad a temperature cannot be read: no error, and <= 0 or NaN
  acts as the documented 1e-10 (the same output as a tiny positive temperature)."""
  fn = TEMPERATURE_FNS[name]
  tiny = np.asarray(fn(1e-10))
  # jit against eager: the same value up to float32 rounding of its terms (the
  # densities are sums of terms of the result's size or smaller).
  close = lambda got: assert_f32_close(got, tiny, np.maximum(1.0, np.abs(tiny)), ulps=16)
  for bad in (-1.0, 0.0, np.nan):
    close(jax.jit(fn)(jnp.array(bad)))
  batch = jax.vmap(fn)(jnp.array([-1.0, 0.5]))
  close(batch[0])
  # grad traces the temperature too: no error, and a clamped temperature gets no gradient.
  g = jax.grad(lambda t: jnp.sum(fn(t)))(jnp.array(-1.0))
  assert float(g) == 0.0


def test_a_concrete_temperature_closed_over_by_jit_is_checked():
  """A constant captured by a jitted function is concrete at trace time: refused."""
  tau = jnp.array(-1.0)
  with pytest.raises(ValueError, match="`temperature`"):
    jax.jit(lambda key: gumbax.gumbel_softmax(key, LOGITS, tau))(KEY)


def test_is_concrete():
  assert _checks.is_concrete(1.0) and _checks.is_concrete(np.float32(1))
  assert _checks.is_concrete(jnp.ones(3)) and _checks.is_concrete([1.0, jnp.ones(())])
  seen = []
  jax.jit(lambda x: seen.append(_checks.is_concrete(x)) or x)(1.0)
  jax.vmap(lambda x: seen.append(_checks.is_concrete(x)) or x)(jnp.ones(2))
  jax.grad(lambda x: seen.append(_checks.is_concrete([1.0, x])) or x)(1.0)
  assert seen == [False, False, False]


# --------------------------------------------------------------------------------
# 2. Conditional samples.

ONE_HOT = np.eye(4, dtype=np.float32)[[2, 0, 3]]
TWO_ONES = ONE_HOT.copy()
TWO_ONES[1, 3] = 1.0
ALL_ZERO = ONE_HOT.copy()
ALL_ZERO[2] = 0.0


@pytest.mark.parametrize("sample,words", [
    (TWO_ONES, ["2 ones", "(1,)", "1 row(s)"]),
    (ALL_ZERO, ["0 ones", "(2,)", "1 row(s)"]),
    (ONE_HOT * 0.5, ["0.5", "(0, 2)"]),
    (ONE_HOT * 2, ["2.0", "(0, 2)"]),
    (ONE_HOT - np.eye(4, dtype=np.float32)[[1, 0, 0]], ["-1.0", "(0, 1)"]),
])
@pytest.mark.parametrize("container", [np.asarray, jnp.asarray], ids=["numpy", "jax"])
def test_conditional_gumbel_refuses_a_concrete_sample_that_is_not_one_hot(
    sample, words, container):
  with pytest.raises(ValueError) as info:
    gumbax.conditional_gumbel(KEY, LOGITS, container(sample))
  message = str(info.value)
  assert "`sample`" in message and "one-hot along axis 1" in message, message
  for word in words:
    assert word in message, (word, message)


def test_conditional_gumbel_checks_along_its_axis():
  along_1 = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]   # (4, 3), one-hot along axis 1
  with pytest.raises(ValueError, match=r"one-hot along axis 0.* 2 ones .*\(0,\)"):
    gumbax.conditional_gumbel(KEY, LOGITS.T, along_1, axis=0)
  z = gumbax.conditional_gumbel(KEY, LOGITS.T, ONE_HOT.T, axis=0)
  np.testing.assert_array_equal(np.argmax(z, 0), np.argmax(ONE_HOT, 1))


def test_conditional_gumbel_accepts_one_hot_in_any_container_and_dtype():
  ref = gumbax.conditional_gumbel(KEY, LOGITS, ONE_HOT)
  for sample in (jnp.asarray(ONE_HOT), ONE_HOT.astype(bool), jnp.asarray(ONE_HOT, jnp.int32),
                 ONE_HOT.tolist()):
    np.testing.assert_array_equal(gumbax.conditional_gumbel(KEY, LOGITS, sample), ref)


def test_conditional_gumbel_traced_sample_is_not_checked():
  """Documented: traced samples are not inspected (no error under jit / vmap)."""
  bad = ONE_HOT * 0.5
  z = jax.jit(gumbax.conditional_gumbel)(KEY, LOGITS, bad)
  np.testing.assert_array_equal(np.argmax(z, -1), np.argmax(ONE_HOT, -1))
  zv = jax.vmap(gumbax.conditional_gumbel, in_axes=(None, 0, 0))(KEY, LOGITS, bad)
  assert zv.shape == LOGITS.shape


BINARY = (LOGITS[:2] > 0).astype(np.float32)


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0])
@pytest.mark.parametrize("container", [np.asarray, jnp.asarray], ids=["numpy", "jax"])
def test_conditional_logistic_refuses_a_concrete_sample_that_is_not_binary(value, container):
  sample = BINARY.copy()
  sample[1, 2] = value
  with pytest.raises(ValueError) as info:
    gumbax.conditional_logistic(KEY, LOGITS[:2], container(sample))
  message = str(info.value)
  assert "`sample`" in message and "binary" in message, message
  assert repr(value) in message and "(1, 2)" in message, message


def test_conditional_logistic_accepts_binary_and_skips_traced():
  ref = gumbax.conditional_logistic(KEY, LOGITS[:2], BINARY)
  for sample in (jnp.asarray(BINARY), BINARY.astype(bool), BINARY.astype(np.int8)):
    np.testing.assert_array_equal(gumbax.conditional_logistic(KEY, LOGITS[:2], sample), ref)
  np.testing.assert_array_equal(np.asarray(ref > 0), BINARY > 0)
  bad = BINARY * 0.5
  z = jax.jit(gumbax.conditional_logistic)(KEY, LOGITS[:2], bad)
  np.testing.assert_array_equal(np.asarray(z > 0), BINARY > 0)   # > 0 counts as 1
  zv = jax.vmap(gumbax.conditional_logistic, in_axes=(None, 0, 0))(KEY, LOGITS[:2], bad)
  np.testing.assert_array_equal(np.asarray(zv > 0), BINARY > 0)


# --------------------------------------------------------------------------------
# 3. Degenerate rows.

CATEGORICAL = {
    "gumbel_max": lambda k, l, axis=-1: gumbax.gumbel_max(k, l, axis=axis),
    "gumbel_softmax": lambda k, l, axis=-1: gumbax.gumbel_softmax(k, l, 0.7, axis=axis),
    "gumbel_softmax_hard": lambda k, l, axis=-1: gumbax.gumbel_softmax(
        k, l, 0.7, hard=True, axis=axis),
    "log_gumbel_softmax": lambda k, l, axis=-1: gumbax.log_gumbel_softmax(k, l, 0.7, axis=axis),
    "straight_through": lambda k, l, axis=-1: gumbax.straight_through(k, l, axis=axis),
    "straight_through_identity": lambda k, l, axis=-1: gumbax.straight_through(
        k, l, axis=axis, backward="identity"),
    "gumbel_top_k": lambda k, l, axis=-1: gumbax.gumbel_top_k(k, l, 2, axis=axis),
}

ALL_MASKED = np.full(4, -np.inf, np.float32)
WITH_NAN = np.array([0.0, np.nan, 1.0, -np.inf], np.float32)


def _with_row(row, index=1):
  logits = LOGITS.copy()
  logits[index] = row
  return logits


@pytest.mark.parametrize("name", sorted(CATEGORICAL))
@pytest.mark.parametrize("row,word", [(ALL_MASKED, "-inf"), (WITH_NAN, "NaN")],
                         ids=["all_masked", "nan"])
@pytest.mark.parametrize("container", [np.asarray, jnp.asarray], ids=["numpy", "jax"])
def test_concrete_degenerate_row_is_refused(name, row, word, container):
  fn = CATEGORICAL[name]
  with pytest.raises(ValueError) as info:
    fn(KEY, container(_with_row(row)))
  message = str(info.value)
  assert "`logits`" in message and word in message and "(1,)" in message, message
  # Along another axis: the row is a column there.
  with pytest.raises(ValueError) as info:
    fn(KEY, container(_with_row(row).T), axis=0)
  assert "axis 0" in str(info.value) and "(1,)" in str(info.value), str(info.value)


@pytest.mark.parametrize("name", sorted(CATEGORICAL))
@pytest.mark.parametrize("row", [ALL_MASKED, WITH_NAN], ids=["all_masked", "nan"])
def test_traced_degenerate_row_is_nan_and_leaves_the_other_rows_alone(name, row):
  fn = CATEGORICAL[name]
  bad = _with_row(row)
  fine = _with_row(np.zeros(4, np.float32))
  jitted = jax.jit(fn)
  want = np.asarray(jitted(KEY, fine))
  vmapped = lambda k, l: jax.vmap(fn, in_axes=(None, 0))(k, l)
  vmap_want = np.asarray(jax.jit(vmapped)(KEY, fine))
  for got, ref in ((jitted(KEY, bad), want), (jax.jit(vmapped)(KEY, bad), vmap_want),
                   (vmapped(KEY, bad), vmap_want)):
    got = np.asarray(got)
    if name == "gumbel_top_k":
      assert got.dtype == np.int32
      np.testing.assert_array_equal(got[1], [-1, -1])
    else:
      assert np.all(np.isnan(got[1])), got
    # Every other row is what it is without the degenerate row (one-hot and integer
    # outputs exactly; log_gumbel_softmax up to rounding of scores of its size).
    got, ref = np.delete(got, 1, 0), np.delete(ref, 1, 0)
    if name == "log_gumbel_softmax":
      finite = ref > np.finfo(np.float32).min
      np.testing.assert_array_equal(got[~finite], ref[~finite])
      assert_f32_close(got[finite], ref[finite], np.maximum(1.0, np.abs(ref[finite])))
    elif name == "gumbel_softmax":
      assert_f32_close(got, ref, 1.0)
    else:
      np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("row", [ALL_MASKED, WITH_NAN], ids=["all_masked", "nan"])
def test_hard_equals_gumbel_max_on_degenerate_rows(row):
  """The documented identity holds on every row, degenerate ones included (NaN == NaN
  for assert_array_equal), under jit and vmap; straight_through draws the same sample."""
  logits = _with_row(row)
  keys = jax.random.split(jax.random.key(3), 5)
  hard = jax.jit(jax.vmap(lambda k, l: gumbax.gumbel_softmax(k, l, 0.3, hard=True),
                          in_axes=(0, None)))(keys, logits)
  gmax = jax.jit(jax.vmap(gumbax.gumbel_max, in_axes=(0, None)))(keys, logits)
  st = jax.jit(jax.vmap(gumbax.straight_through, in_axes=(0, None)))(keys, logits)
  np.testing.assert_array_equal(hard, gmax)
  np.testing.assert_array_equal(st, gmax)
  assert np.all(np.isnan(np.asarray(gmax)[:, 1]))
  # The first top-k index is the gumbel_max category; -1 on the degenerate row.
  top = jax.jit(jax.vmap(lambda k, l: gumbax.gumbel_top_k(k, l, 1), in_axes=(0, None)))(
      keys, logits)
  g = np.asarray(gmax)
  np.testing.assert_array_equal(top[:, [0, 2], 0], np.argmax(g[:, [0, 2]], -1))
  np.testing.assert_array_equal(top[:, 1, 0], -1)


@pytest.mark.parametrize("row", [ALL_MASKED, WITH_NAN], ids=["all_masked", "nan"])
def test_estimators_hard_sample_agrees_with_gumbel_max_on_degenerate_rows(row):
  """The estimators' exact sample ``H(logits + g)`` is gumbel_max's, NaN rows included."""
  logits = _with_row(row)
  keys = jax.random.split(jax.random.key(4), 3)
  est = gumbax.estimators.get("straight_through_gumbel")
  got = jax.jit(jax.vmap(est.sample, in_axes=(0, None)))(keys, logits)
  want = jax.jit(jax.vmap(gumbax.gumbel_max, in_axes=(0, None)))(keys, logits)
  np.testing.assert_array_equal(got, want)
  assert np.all(np.isnan(np.asarray(got)[:, 1]))


@pytest.mark.parametrize("name", sorted(set(CATEGORICAL) - {"gumbel_top_k", "gumbel_max"}))
def test_traced_degenerate_row_keeps_other_rows_gradients_finite(name):
  fn = CATEGORICAL[name]
  logits = jnp.asarray(_with_row(ALL_MASKED))
  w = jnp.asarray(np.cos(np.arange(12.0)).reshape(3, 4), jnp.float32)
  loss = lambda l: jnp.sum(jnp.where(jnp.arange(3)[:, None] == 1, 0.0, fn(KEY, l)) * w)
  g = np.asarray(jax.grad(loss)(logits))
  assert np.all(np.isfinite(np.delete(g, 1, 0))), g
  assert np.all(g[2, 1] == 0.0)      # the masked category of a partly masked row


def test_partially_masked_rows_are_not_degenerate():
  """Masking all but one category is fine: that category is always drawn."""
  logits = np.array([[-np.inf, -np.inf, 0.5, -np.inf], [0.0, 1.0, 2.0, 3.0]], np.float32)
  for name, fn in CATEGORICAL.items():
    if name == "gumbel_top_k":
      np.testing.assert_array_equal(gumbax.gumbel_top_k(KEY, logits, 1)[0], [2])
      continue
    out = np.asarray(fn(KEY, logits))
    assert np.all(np.isfinite(out)), (name, out)
    if name != "log_gumbel_softmax":
      np.testing.assert_array_equal(out[0], [0.0, 0.0, 1.0, 0.0])


def test_straight_through_identity_masked_category_is_zero_not_nan():
  logits = jnp.asarray(LOGITS)
  out = gumbax.straight_through(KEY, logits, backward="identity")
  np.testing.assert_array_equal(out, gumbax.gumbel_max(KEY, logits))
  g = jax.grad(lambda l: jnp.sum(gumbax.straight_through(KEY, l, backward="identity")
                                 * jnp.arange(4.0)[None]))(logits)
  np.testing.assert_array_equal(np.asarray(g)[2], [0.0, 0.0, 2.0, 3.0])   # dx/dl = I / tau


# --------------------------------------------------------------------------------
# 4. gumbel_top_k: k above the unmasked count.

MASKED = np.array([[0.0, -np.inf, 1.0, -np.inf, 2.0], [0.0, 1.0, -np.inf, -np.inf, -np.inf],
                   [0.0, 1.0, 2.0, 3.0, 4.0]], np.float32)


@pytest.mark.parametrize("container", [np.asarray, jnp.asarray], ids=["numpy", "jax"])
def test_top_k_refuses_k_above_the_unmasked_count(container):
  with pytest.raises(ValueError) as info:
    gumbax.gumbel_top_k(KEY, container(MASKED), 3)
  message = str(info.value)
  for word in ("`k`=3", "smallest count along axis 1 is 2", "(1,)"):
    assert word in message, (word, message)
  with pytest.raises(ValueError) as info:
    gumbax.gumbel_top_k(KEY, container(MASKED.T), 3, axis=0)
  assert "`k`=3" in str(info.value) and "axis 0 is 2" in str(info.value), str(info.value)
  # k up to the smallest count is fine, and never returns a masked category.
  idx = np.asarray(gumbax.gumbel_top_k(KEY, container(MASKED), 2))
  assert np.all(np.isfinite(np.take_along_axis(MASKED, idx, -1)))


def test_top_k_traced_k_above_the_unmasked_count_puts_masked_ones_last():
  """Documented: traced logits are not checked; masked indices follow the unmasked."""
  for idx in (jax.jit(gumbax.gumbel_top_k, static_argnums=2)(KEY, MASKED, 4),
              jax.vmap(gumbax.gumbel_top_k, in_axes=(None, 0, None))(KEY, MASKED, 4)):
    idx = np.asarray(idx)
    assert np.all(idx >= 0)
    picked = np.take_along_axis(MASKED, idx, -1)
    np.testing.assert_array_equal(np.isfinite(picked[1]), [True, True, False, False])
    np.testing.assert_array_equal(np.isfinite(picked[0]), [True, True, True, False])
    assert np.all(np.isfinite(picked[2]))


# ---- one rule for integer arguments ------------------------------------------------
# Every public integer argument goes through ``_checks.check_int``: TypeError when the
# value is not an integer (bool is not one; NumPy integer scalars are), ValueError when
# it is below the minimum; the message names the argument and the value received.


def _int_argument_calls():
  from flax import nnx
  from gumbax import diagnostics, estimators, schedules
  from gumbax import nnx as gnnx

  def grad_fn(k):
    return {"a": jax.random.normal(k, (2,))}

  return {
      "estimator num_samples (rloo)": ("num_samples", lambda v: estimators.get("rloo", num_samples=v)),
      "estimator num_samples (gumbel_rao)":
          ("num_samples", lambda v: estimators.get("gumbel_rao", num_samples=v)),
      "schedule every": ("every", lambda v: schedules.exponential_annealing(every=v)),
      "schedule transition_steps":
          ("transition_steps", lambda v: schedules.linear(1.0, 0.5, transition_steps=v)),
      "schedule decay_steps": ("decay_steps", lambda v: schedules.cosine(1.0, 0.5, decay_steps=v)),
      "diagnostics num_samples": ("num_samples", lambda v: diagnostics.gradient_statistics(
          grad_fn, jax.random.key(0), num_samples=v)),
      "diagnostics chunk_size": ("chunk_size", lambda v: diagnostics.gradient_statistics(
          grad_fn, jax.random.key(0), num_samples=4, chunk_size=v)),
      "layer num_latents": ("num_latents", lambda v: gnnx.CategoricalLatent(
          5, v, 3, rngs=nnx.Rngs(0))),
  }


_INT_PLACES = list(_int_argument_calls())


@pytest.mark.parametrize("place", _INT_PLACES)
@pytest.mark.parametrize("value", [2.5, "3", True])
def test_integer_argument_of_wrong_type_is_type_error(place, value):
  name, call = _int_argument_calls()[place]
  with pytest.raises(TypeError, match=rf"`{name}` must be an int >= \d+; got {re.escape(repr(value))}"):
    call(value)


@pytest.mark.parametrize("place", _INT_PLACES)
@pytest.mark.parametrize("value", [0, -3])
def test_integer_argument_below_minimum_is_value_error(place, value):
  name, call = _int_argument_calls()[place]
  with pytest.raises(ValueError, match=rf"`{name}` must be an int >= \d+; got {value}"):
    call(value)


@pytest.mark.parametrize("value", [3, np.int32(3), np.int64(3)])
def test_check_int_accepts_python_and_numpy_integers(value):
  out = _checks.check_int(value, "n", 1)
  assert out == 3 and type(out) is int
