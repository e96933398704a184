"""The toy problem of REBAR and RELAX: minimize ``E_b[(b - t)^2]`` over one variable.

Bernoulli: ``b ~ Bernoulli(sigmoid(theta))``, loss ``(b - t)^2``. With t = 0.45
(REBAR) or 0.499 (RELAX) the two outcomes differ little in loss, so the gradient
signal is tiny next to the estimator's noise. The categorical version draws a
one-hot ``b`` over K classes and uses ``(b . v - t)^2`` with ``v_j = j / (K - 1)``:
at K = 2 it is the Bernoulli problem. The expectation is exact (enumeration), so
the exact loss and the estimator's gradient variance are logged at every log step.

References:
  Tucker et al., REBAR, 2017 (arXiv 1703.07370), section 6.1; Grathwohl et al.,
  Backpropagation through the Void, 2018 (arXiv 1711.00123), section 6.1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.tasks.base import Task


class Toy(Task):
  """``min_theta E[(b - t)^2]``; exact loss and gradient variance per log step."""

  eval_splits = ("exact",)

  def init(self, key):
    del key
    shape = () if self.distribution == "bernoulli" else (self.config.num_classes,)
    return {"theta": jnp.full(shape, self.config.init_logit, jnp.float32)}

  def _values(self):
    return jnp.linspace(0.0, 1.0, self.config.num_classes, dtype=jnp.float32)

  def model(self, params, batch):
    t = self.config.target
    if self.distribution == "bernoulli":
      return params["theta"], lambda b: jnp.square(b - t)
    v = self._values()
    return params["theta"], lambda b: jnp.square(b @ v - t)

  def exact_loss(self, params):
    t = self.config.target
    theta = params["theta"]
    if self.distribution == "bernoulli":
      p = jax.nn.sigmoid(theta)
      return p * (1 - t) ** 2 + (1 - p) * t ** 2
    return jnp.sum(jax.nn.softmax(theta) * jnp.square(self._values() - t))

  def _best_probability(self, params):
    """Probability of the loss-minimizing outcome."""
    theta = params["theta"]
    if self.distribution == "bernoulli":
      p = jax.nn.sigmoid(theta)
      return jnp.where(self.config.target > 0.5, p, 1 - p) if self.config.target != 0.5 else p
    return jax.nn.softmax(theta)[jnp.argmin(jnp.abs(self._values() - self.config.target))]

  def probe(self, estimator, key, params, cv, temperature=None):
    logits, f = self.model(params, None)

    def one(k):
      return jax.grad(lambda l: jnp.sum(estimator(k, l, f, cv, temperature=temperature)))(logits)

    grads = jax.vmap(one)(jax.random.split(key, self.config.variance_samples))
    return {"exact_loss": self.exact_loss(params),
            "p_best": self._best_probability(params),
            "grad_variance": jnp.sum(jnp.var(grads, axis=0, ddof=1))}

  def evaluate(self, params, key, split, num_samples, final, temperature=1.0):
    del key, num_samples, final, temperature
    if split != "exact":
      raise ValueError(f"The toy task evaluates only split 'exact'; got {split!r}.")
    return {"loss": float(self.exact_loss(params)), "p_best": float(self._best_probability(params))}
