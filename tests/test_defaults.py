"""Default hyperparameters that do not fail users."""

import jax
import jax.numpy as jnp
import numpy as np

from gumbax import estimators


def test_nvil_default_keeps_the_gradient_unbiased_after_large_losses():
  """With NVIL's variance normalization (``normalize=True``, Mnih & Gregor) the score
  term is divided by the running loss std once it exceeds 1, so a gradient added
  outside the estimator (a VAE's KL) outweighs it and the posterior collapses. The
  default leaves it unscaled: after the running statistics have seen losses with a
  std of about 100, the mean gradient over many keys is still the exact one."""
  logits = jnp.array([[0.3, -0.2, 0.5, 0.0], [1.0, 0.0, -1.0, 0.2]])
  w = 100.0 * jax.random.normal(jax.random.key(1), (2, 4))
  f = lambda b: jnp.sum(b * w)  # noqa: E731 - loss std ~100 nats
  est = estimators.get("reinforce", baseline="nvil")
  assert est.normalize is False
  cv = est.init(jax.random.key(2), logits)
  for i in range(200):  # the running mean and variance of a training loop
    sample = jax.nn.one_hot(jax.random.categorical(jax.random.key(100 + i), logits), 4)
    cv = est.update(cv, logits, f(sample))
  assert float(cv["state"]["var"]) > 1000.0  # normalize=True would divide by > 30

  exact = jax.grad(lambda l: estimators.get("exact")(jax.random.key(0), l, f, {}))(logits)
  grad = jax.jit(jax.vmap(jax.grad(lambda l, k: est(k, l, f, cv)), in_axes=(None, 0)))
  n = 20_000
  draws = np.asarray(grad(logits, jax.random.split(jax.random.key(3), n)), np.float64)
  mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(n)
  # 8 coordinates at 5 standard errors: false-failure rate about 8 * 5.7e-7 < 1e-5.
  np.testing.assert_array_less(np.abs(mean - np.asarray(exact)), 5 * se)
  # A gradient scaled by 1/30 (the normalized one) would be caught: the exact gradient
  # is many standard errors from zero in most coordinates.
  assert np.sum(np.abs(np.asarray(exact)) > 10 * se) >= 4
