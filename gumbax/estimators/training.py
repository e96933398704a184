"""One training-step function that treats every estimator the same way."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gumbax.estimators._base import Estimator

__all__ = ["StepGradients", "value_and_grads"]


class StepGradients(NamedTuple):
  """What :func:`value_and_grads` returns.

  Attributes:
    loss: mean of the surrogate's forward value (the loss at the samples).
    grads: gradient of that mean for the model's parameters (the estimate).
    cv_grads: gradient of the variance objective for ``cv["params"]`` (``{}``
      when the estimator has no trainable control variate).
    cv: the control variate with its non-trainable state advanced
      (:meth:`Estimator.update`), to use at the next step.
  """

  loss: jax.Array
  grads: Any
  cv_grads: Any
  cv: Any


def value_and_grads(estimator: Estimator, key: jax.Array,
                    model: Callable[[Any], tuple[jax.Array, Callable]], params: Any,
                    cv: dict | None = None, *, temperature=None) -> StepGradients:
  """The model's gradient estimate and the control variate's variance gradient.

  ``model(params)`` returns ``(logits, f)``: the logits of the discrete variables and
  the loss ``f(b)`` per example, closing over ``params`` (encoder through the
  logits, decoder through ``f``). Apply ``grads`` to ``params`` and ``cv_grads`` to
  ``cv["params"]`` with any optimizer; keep the returned ``cv``.

  Args:
    estimator: any registered estimator.
    key: a PRNG key for this step.
    model: ``params -> (logits, f)``.
    params: the model's parameters (any pytree).
    cv: the estimator's control variate (from ``estimator.init``), or None.
    temperature: the estimator's sampling temperature for this step (e.g. a
      schedule's value), passed to the estimator's call; None: its default. Only
      estimators with ``uses_temperature`` accept one that is not None.

  Returns:
    A :class:`StepGradients`.

  Example:
    >>> import optax
    >>> key, params = jax.random.key(0), {"logits": jnp.zeros((2, 3)), "w": jnp.ones(3)}
    >>> model = lambda p: (p["logits"], lambda b: jnp.sum((b - p["w"]) ** 2, axis=-1))
    >>> est = gumbax.estimators.get("rebar")
    >>> cv = est.init(key, params["logits"])
    >>> opt, cv_opt = optax.adam(1e-2), optax.adam(1e-3)
    >>> state, cv_state = opt.init(params), cv_opt.init(cv["params"])
    >>> out = gumbax.estimators.value_and_grads(est, key, model, params, cv)
    >>> updates, state = opt.update(out.grads, state)
    >>> params = optax.apply_updates(params, updates)
    >>> cv_updates, cv_state = cv_opt.update(out.cv_grads, cv_state)
    >>> cv = {**out.cv, "params": optax.apply_updates(out.cv["params"], cv_updates)}
    >>> sorted(out.grads), sorted(out.cv_grads)
    (['logits', 'w'], ['eta', 'log_temperature'])

  References:
    Grathwohl et al., Backpropagation through the Void, 2018 (arXiv 1711.00123),
    Algorithm 1 (joint optimization of the model and the control variate).
  """
  cv = {} if cv is None else cv

  def mean_surrogate(p):
    logits, f = model(p)
    values = estimator(key, logits, f, cv, temperature=temperature)
    return jnp.mean(values), (values, logits)

  (loss, (values, logits)), grads = jax.value_and_grad(mean_surrogate, has_aux=True)(params)
  cv_params = cv.get("params", {})
  if jax.tree_util.tree_leaves(cv_params):
    logits_v, f_v = model(params)
    cv_grads = jax.grad(lambda cp: estimator.variance_loss(
        key, logits_v, f_v, {**cv, "params": cp}, temperature=temperature))(cv_params)
  else:
    cv_grads = cv_params
  new_cv = estimator.update(cv, jax.lax.stop_gradient(logits), jax.lax.stop_gradient(values))
  return StepGradients(loss, grads, cv_grads, new_cv)
