"""What the NNX and linen layers share (private): validation, modes, KL, errors.

Both :mod:`gumbax.nnx` and :mod:`gumbax.linen` are thin shells that own parameters
and random streams; every computation they do is one of the functions here, so the
two APIs give identical outputs for the same key and parameters.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gumbax import _checks
from gumbax import estimators
from gumbax.densities import categorical_kl
from gumbax.densities import exp_concrete_log_prob
from gumbax.gumbel import gumbel_top_k
from gumbax.relaxed import gumbel_softmax
from gumbax.relaxed import log_gumbel_softmax
from gumbax.relaxed import relaxed_bernoulli
from gumbax.relaxed import relaxed_top_k
from gumbax.relaxed import sigmoid_scores
from gumbax.relaxed import softmax_scores

EVAL_MODES = ("argmax", "softmax")
PRIORS = ("uniform", "learned")
KLS = ("analytic", "relaxed")
SELECTOR_METHODS = ("concrete", "top_k")
# A learned temperature is clamped to [min_temperature, exp(80) ~ 5.5e34]: larger
# temperatures give the same (uniform) samples, and the temperature's gradient
# (through 1 / tau ** 2) stays finite in float32.
MAX_LOG_TEMPERATURE = 80.0


class LatentOutput(NamedTuple):
  """What ``CategoricalLatent`` returns.

  Attributes:
    sample: the latent sample, shape ``batch + (num_latents, num_classes)``,
      carrying the chosen estimator's gradient (one-hot or relaxed).
    logits: the posterior logits, same shape.
    kl: the KL divergence to the prior, summed over latents, shape ``batch``.
  """

  sample: jax.Array
  logits: jax.Array
  kl: jax.Array


# -- validation of constructor arguments --------------------------------------


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"`{name}` must be one of {list(choices)}; got {value!r}.")


def check_common(layer: str, temperature, hard, axis, learn_temperature,
                 temperature_shape, min_temperature, deterministic, eval_mode,
                 rng_collection) -> None:
  """Validates the arguments every layer takes; raises naming the argument."""
  _checks.check_positive_static(temperature, "temperature")
  if (isinstance(min_temperature, bool) or not isinstance(min_temperature, numbers.Real)
      or not 0 < min_temperature < np.exp(MAX_LOG_TEMPERATURE)):
    raise ValueError(f"`min_temperature` must be a number > 0; got {min_temperature!r}.")
  if learn_temperature and not isinstance(temperature, jax.core.Tracer) and np.any(
      np.asarray(temperature) < min_temperature):
    raise ValueError(
        f"The initial `temperature` {temperature!r} is below `min_temperature`="
        f"{min_temperature}.")
  for name, value in (("hard", hard), ("learn_temperature", learn_temperature)):
    if not isinstance(value, bool):
      raise TypeError(f"`{name}` of {layer} must be a bool; got {value!r}.")
  if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
    raise TypeError(f"`axis` of {layer} must be an int; got {axis!r}.")
  if deterministic is not None and not isinstance(deterministic, bool):
    raise TypeError(f"`deterministic` of {layer} must be a bool or None; got {deterministic!r}.")
  if eval_mode is not None:             # None: the layer has no evaluation modes
    _choice(eval_mode, "eval_mode", EVAL_MODES)
  if not isinstance(rng_collection, str) or not rng_collection:
    raise TypeError(f"`rng_collection` must be a non-empty str; got {rng_collection!r}.")
  shape = temperature_shape
  if not (isinstance(shape, tuple) and all(
      isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in shape)):
    raise ValueError(
        f"`temperature_shape` must be a tuple of positive ints (e.g. (num_latents,) for a "
        f"per-latent temperature); got {shape!r}.")
  if shape and not learn_temperature:
    raise ValueError(
        f"`temperature_shape`={shape} is only used with learn_temperature=True; for a "
        "fixed per-latent temperature pass an array as `temperature`.")


def check_latent(num_latents, num_classes, prior, kl) -> None:
  _checks.check_int(num_latents, "num_latents", 1)
  _checks.check_int(num_classes, "num_classes", 1)
  _choice(prior, "prior", PRIORS)
  _choice(kl, "kl", KLS)


def check_selector(num_selected, method, num_features=None) -> None:
  """SubsetSelector's own arguments (``num_features`` may be unknown yet, in linen)."""
  _checks.check_int(num_selected, "num_selected", 1)
  _choice(method, "method", SELECTOR_METHODS)
  if num_features is not None:
    _checks.check_int(num_features, "num_features", 1)
    if num_selected > num_features:
      raise ValueError(
          f"`num_selected`={num_selected} must be at most `num_features`={num_features} "
          "(a subset of the input features).")


def selector_logits_init(key, method: str, num_features: int, num_selected: int) -> jax.Array:
  """SubsetSelector's initial logits: Glorot-normal ``(k, n)`` for ``"concrete"`` (as
  Abid et al.'s Keras layer), zeros ``(n,)`` (every subset equally likely) for
  ``"top_k"``."""
  if method == "concrete":
    return jax.nn.initializers.glorot_normal()(key, (num_selected, num_features), jnp.float32)
  return jnp.zeros((num_features,), jnp.float32)


def check_features(layer: str, x: jax.Array, num_features: int) -> None:
  if x.ndim == 0 or x.shape[-1] != num_features:
    raise ValueError(
        f"{layer} selects among {num_features} features, so its input must have shape "
        f"batch + ({num_features},); got shape {x.shape}.")


def selected_indices(logits: jax.Array, method: str, num_selected: int) -> jax.Array:
  """The deterministic selection: each node's argmax (``"concrete"``, node order) or
  the ``k`` largest logits in ascending feature order (``"top_k"``); int32 ``(k,)``."""
  logits = jax.lax.stop_gradient(jnp.asarray(logits))
  if method == "concrete":
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  _, index = jax.lax.top_k(logits, num_selected)
  return jnp.sort(index).astype(jnp.int32)


def select(key, logits, x, temperature, *, method: str, num_selected: int, hard: bool,
           deterministic: bool, layer: str = "SubsetSelector") -> jax.Array:
  """SubsetSelector's output, ``batch + (k,)`` selected feature values of ``x``.

  Deterministic: ``x[..., selected_indices]``. Training, ``"concrete"``: one
  Gumbel-softmax sample ``w`` of shape ``(k, n)`` (shared by the batch) and
  ``x @ w.T``; ``"top_k"``: the relaxed k-hot mask ``m = relaxed_top_k(key, logits,
  k, tau)`` of shape ``(n,)`` and ``(m * x)`` at the drawn set's ``k`` indices, in
  ascending feature order.
  """
  x = jnp.asarray(x)
  num_features = logits.shape[-1]
  check_features(layer, x, num_features)
  if deterministic:
    return jnp.take(x, selected_indices(logits, method, num_selected), axis=-1)
  if method == "concrete":
    w = gumbel_softmax(key, logits, temperature, hard=hard)
    return jnp.einsum("...n,kn->...k", x, w.astype(jnp.result_type(x, w)))
  mask = relaxed_top_k(key, logits, num_selected, temperature, hard=hard)
  # The drawn set (the hard mask's support: the same key, so the same noise), sorted.
  index = jnp.sort(gumbel_top_k(key, logits, num_selected))
  scale = jnp.take(mask, index).astype(x.dtype)
  return jnp.take(x, index, axis=-1) * scale.reshape((1,) * (x.ndim - 1) + scale.shape)


def make_estimator(name: Any, hyperparameters: dict | None) -> estimators.Pathwise:
  """The pathwise estimator ``name`` with its hyperparameters (validated now); its
  temperature is each call's (:func:`latent` passes it), not a field."""
  pathwise = estimators.names(estimators.Pathwise)  # they need no `f`
  if not isinstance(name, str) or name not in pathwise:
    raise ValueError(
        f"`estimator` must be the name of a pathwise estimator, one of {pathwise} "
        f"(score-function estimators need the loss `f`: call them directly); got {name!r}.")
  hyperparameters = dict(hyperparameters or {})
  for reserved in ("temperature", "distribution"):
    if reserved in hyperparameters:
      raise ValueError(
          f"`estimator_kwargs` may not set {reserved!r}; it is the layer's own argument "
          f"({'`temperature`' if reserved == 'temperature' else 'always categorical'}).")
  return estimators.get(name, **hyperparameters)


# -- temperatures ---------------------------------------------------------------


def initial_log_temperature(temperature, shape: tuple[int, ...]) -> jax.Array:
  """``log(temperature)`` broadcast to ``shape``: the learned parametrization's start."""
  value = np.log(np.asarray(temperature, np.float32))
  try:
    return jnp.asarray(np.broadcast_to(value, shape), jnp.float32)
  except ValueError:
    raise ValueError(
        f"The initial `temperature` of shape {value.shape} does not broadcast to "
        f"`temperature_shape`={shape}.") from None


def learned_temperature(log_temperature: jax.Array, min_temperature: float) -> jax.Array:
  """``exp(log_temperature)`` clamped to ``[min_temperature, e^80]``, clamp invisible to grad.

  The forward value is clamped, so the temperature is positive and its gradients
  finite whatever the updates did; the backward pass is that of the unclamped
  ``exp`` evaluated at the clamped point, so a parameter pushed past a bound still
  receives a gradient and can come back.
  """
  log_tau = jnp.asarray(log_temperature)
  bounded = jnp.clip(log_tau, np.log(min_temperature), MAX_LOG_TEMPERATURE)
  return jnp.exp(log_tau + jax.lax.stop_gradient(bounded - log_tau))


def resolve_temperature(layer: str, fixed, log_temperature, call_value,
                        min_temperature: float):
  """The temperature to use: learned ``exp(log_temperature)``, call-time or fixed."""
  if log_temperature is not None:
    if call_value is not None:
      raise ValueError(
          f"{layer} learns its temperature (learn_temperature=True); do not pass "
          "`temperature` at call time.")
    return learned_temperature(log_temperature, min_temperature)
  if call_value is not None:
    _checks.check_positive_static(call_value, "temperature")
    return call_value
  return fixed


# -- deterministic switch and missing-stream errors ------------------------------


def resolve_deterministic(layer: str, api: str, constructed, called) -> bool:
  """Call-time value first, then the constructor's; a helpful error if both are None."""
  value = called if called is not None else constructed
  if value is None:
    if api == "nnx":
      third = ("  3. set it for the whole model: `model.train()` / `model.eval()`, or "
               "`nnx.view(model, deterministic=True)`.\n")
    else:
      third = ("  3. thread a flag through your model: "
               f"`{layer}(..., deterministic=not train)`.\n")
    raise ValueError(
        f"No `deterministic` value was given to {layer}: it must know whether to draw a "
        "random sample (training, deterministic=False) or not (evaluation, "
        "deterministic=True). Fixes:\n"
        f"  1. pass it to the constructor: `{layer}(..., deterministic=False)`;\n"
        "  2. pass it at call time: `layer(x, deterministic=True)`;\n" + third)
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"`deterministic` must be a bool; got {value!r}.")
  return bool(value)


def missing_rng_error(layer: str, api: str, collection: str, detail: str) -> ValueError:
  """The error for a training-mode call without a random key, listing the fixes."""
  if api == "nnx":
    fixes = (
        f"  1. construct it with a stream named {collection!r} (or a default stream): "
        f"`{layer}(..., rngs=nnx.Rngs({collection}=0))` or `rngs=nnx.Rngs(0)`;\n"
        f"  2. pass one at call time: `layer(x, rngs=nnx.Rngs({collection}=1))`, an "
        "`nnx.RngStream`, or a key `layer(x, rngs=jax.random.key(1))`;\n")
  else:
    fixes = (
        f"  1. give the stream to apply: `model.apply(variables, x, "
        f"rngs={{{collection!r}: jax.random.key(1)}})`;\n"
        "  2. pass a key at call time: `layer(x, rng=key)`;\n")
  return ValueError(
      f"{layer} is in training mode (deterministic=False) and needs a random key from "
      f"the {collection!r} rng stream, but {detail}. Fixes:\n" + fixes +
      "  3. for evaluation, use deterministic=True, which needs no key.")


# -- the computations -----------------------------------------------------------


def categorical(key, logits, temperature, *, hard: bool, axis: int, deterministic: bool,
                eval_mode: str) -> jax.Array:
  """GumbelSoftmax's output: a (ST-)Gumbel-softmax sample, or the eval-mode value."""
  logits, dtype = _checks.as_logits(logits)
  if not deterministic:
    return gumbel_softmax(key, logits, temperature, hard=hard, axis=axis)
  axis = _checks.category_axis(axis, logits.ndim)
  logits = jax.lax.stop_gradient(logits) if eval_mode == "argmax" else logits
  cdtype = _checks.compute_dtype(dtype)
  if eval_mode == "argmax":
    index = jnp.argmax(logits, axis=axis)
    return jax.nn.one_hot(index, logits.shape[axis], dtype=dtype, axis=axis)
  return softmax_scores(logits.astype(cdtype), temperature, axis).astype(dtype)


def bernoulli(key, logits, temperature, *, hard: bool, deterministic: bool,
              eval_mode: str) -> jax.Array:
  """RelaxedBernoulli's output: a (ST-)relaxed sample, or the eval-mode value."""
  logits, dtype = _checks.as_logits(logits)
  if not deterministic:
    return relaxed_bernoulli(key, logits, temperature, hard=hard)
  if eval_mode == "argmax":
    return (jax.lax.stop_gradient(logits) > 0).astype(dtype)
  return sigmoid_scores(logits.astype(_checks.compute_dtype(dtype)), temperature).astype(dtype)


def analytic_kl(logits: jax.Array, prior_logits: jax.Array) -> jax.Array:
  """The categorical KL to the prior (:func:`gumbax.categorical_kl`), summed over
  latents: one value per example."""
  return jnp.sum(categorical_kl(logits, prior_logits), axis=-1)


def relaxed_kl(key, logits: jax.Array, prior_logits: jax.Array, temperature) -> jax.Array:
  """Single-sample ExpConcrete KL estimate ``log q(x) - log p(x)``, summed over latents.

  ``x = log_gumbel_softmax(key, logits, temperature)`` uses the same key (so the
  same Gumbel noise) as the layer's sample; the prior is relaxed at the same
  temperature.
  """
  x = log_gumbel_softmax(key, logits, temperature)
  log_q = exp_concrete_log_prob(x, logits, temperature)
  log_p = exp_concrete_log_prob(x, jnp.broadcast_to(prior_logits, logits.shape), temperature)
  return jnp.sum(log_q - log_p, axis=-1)


def latent(key, logits, temperature, *, estimator: estimators.Pathwise, prior_logits,
           kl: str, deterministic: bool, eval_mode: str) -> LatentOutput:
  """CategoricalLatent's output for logits ``batch + (num_latents, num_classes)``."""
  if deterministic:
    sample = categorical(None, logits, temperature, hard=False, axis=-1,
                         deterministic=True, eval_mode=eval_mode)
    return LatentOutput(sample, logits, analytic_kl(logits, prior_logits))
  sample = estimator.sample_with_gradient(key, logits, temperature).astype(logits.dtype)
  if kl == "analytic":
    divergence = analytic_kl(logits, prior_logits)
  else:
    divergence = relaxed_kl(key, logits, prior_logits, temperature)
  return LatentOutput(sample, logits, divergence)
