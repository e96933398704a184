"""Structured output prediction of Jang et al. (2017), Table 1 (SBN rows).

Predict the lower half of a binarized MNIST digit (392 pixels) from its upper half
with a sigmoid belief network: ``392 -> h_1 -> ... -> h_L -> 392`` where every
``h_l`` is a layer of ``num_latents`` Bernoulli units (or ``num_latents``
categorical variables of ``num_classes`` classes, one-hot and flattened) whose
logits are an affine function of the layer below. Training minimizes
``E[-log p(y | h_L)]`` with one sample (m = 1); evaluation reports
``nll = -log (1/m) sum_i p(y | h^(i))`` with ``h^(i)`` drawn ancestrally from the
network, the m-sample importance-sampled estimate of ``-log p(y | x)`` in nats.

Several stochastic layers need an estimator per layer. The task nests them: the
loss seen by layer l's estimator is the surrogate of layer l + 1's estimator
(whose forward value is the loss at its sample), so every registered estimator
except ``exact`` works unchanged, each layer with its own control variate. Below the
last layer that loss is stochastic; it comes as a ``MeanFieldLoss`` whose
deterministic version propagates means through the later layers, the mean-field
network MuProp's Taylor expansion is taken on (Gu et al. 2016; ``options:
{mean_field: false}`` expands around the sampled loss instead).

References:
  Jang, Gu, Poole, Categorical Reparameterization with Gumbel-Softmax, 2017
  (arXiv 1611.01144), section 4.2; Raiko et al., Techniques for Learning Binary
  Stochastic Feedforward Neural Networks, 2015 (arXiv 1406.2989); Gu et al.,
  MuProp, 2016 (arXiv 1511.05176).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

import gumbax
from gumbax import networks
from experiments.tasks import _mnist

HALF = 392


class StructuredOutput(_mnist.MnistTask):
  """Lower half from upper half through ``stochastic_layers`` discrete layers."""

  @property
  def depth(self) -> int:
    return self.config.stochastic_layers

  def init(self, key):
    width = math.prod(self.latent_shape)
    keys = jax.random.split(key, self.depth + 1)
    sizes = [HALF] + [width] * self.depth
    layers = [networks.mlp_init(k, [m, n])[0] for k, m, n in zip(keys, sizes[:-1], sizes[1:])]
    return {"layers": layers, "out": networks.mlp_init(keys[-1], [width, HALF])[0]}

  def logits(self, params, level, h):
    return networks.dense_apply(params["layers"][level], h).reshape(h.shape[:-1] + self.latent_shape)

  def flatten(self, b):
    return b.reshape(b.shape[:b.ndim - len(self.latent_shape)] + (-1,))

  def nll_given(self, params, h, y):
    return -_mnist.bernoulli_log_likelihood(networks.dense_apply(params["out"], h), y)

  def _downstream(self, estimator, keys, params, cvs, level, y, temperature=None):
    """``f`` for layer ``level``: the loss given its sample (nested surrogates below,
    each estimator called at ``temperature``).

    Below the last layer ``f`` samples the layers above it, so it comes with its
    mean-field version (each later layer at its mean), which MuProp expands around.
    """
    def f(b):
      h = self.flatten(b)
      if level == self.depth - 1:
        return self.nll_given(params, h, y)
      logits = self.logits(params, level + 1, h)
      below = self._downstream(estimator, keys, params, cvs, level + 1, y, temperature)
      return estimator(keys[level + 1], logits, below, cvs[level + 1], temperature=temperature)

    def mean_field(b):
      h = self.flatten(b)
      for later in range(level + 1, self.depth):
        logits = self.logits(params, later, h)
        h = self.flatten(jax.nn.softmax(logits) if self.categorical else jax.nn.sigmoid(logits))
      return self.nll_given(params, h, y)

    if level == self.depth - 1:
      return f
    return gumbax.estimators.MeanFieldLoss(f, mean_field)

  def _split_cv(self, cv):
    if not cv:
      return [{}] * self.depth
    return [{"params": p, "state": s} for p, s in zip(cv["params"], cv["state"])]

  def _hard_path(self, params, key, x):
    """Logits of every layer along one exact ancestral sample."""
    out, h = [], x
    for level in range(self.depth):
      logits = self.logits(params, level, h)
      out.append(logits)
      h = self.flatten(self.draw(jax.random.fold_in(key, level), logits))
    return out

  def init_cv(self, estimator, key, params, batch):
    logits = self._hard_path(params, key, batch[:, :HALF])
    cvs = [estimator.init(jax.random.fold_in(key, 100 + l), lg) for l, lg in enumerate(logits)]
    if not cvs[0]:
      return {}
    return {"params": [c["params"] for c in cvs], "state": [c["state"] for c in cvs]}

  def gradients(self, estimator, key, params, cv, batch, temperature=None):
    x, y = batch[:, :HALF], batch[:, HALF:]
    keys = list(jax.random.split(key, self.depth))
    cvs = self._split_cv(cv)

    def mean_surrogate(p):
      f = self._downstream(estimator, keys, p, cvs, 0, y, temperature)
      values = estimator(keys[0], self.logits(p, 0, x), f, cvs[0], temperature=temperature)
      return jnp.mean(values), values

    (loss, values), grads = jax.value_and_grad(mean_surrogate, has_aux=True)(params)
    if not cv:
      return gumbax.estimators.StepGradients(loss, grads, {}, {})
    path = self._hard_path(params, jax.random.fold_in(key, 1), x)
    hs = [x] + [self.flatten(self.draw(jax.random.fold_in(key, 200 + l), lg))
                for l, lg in enumerate(path[:-1])]

    def variance(cv_params):
      local = [{**c, "params": q} for c, q in zip(cvs, cv_params)]
      total = 0.0
      for level in range(self.depth):
        logits = self.logits(params, level, hs[level])
        f = self._downstream(estimator, keys, params, local, level, y, temperature)
        total = total + estimator.variance_loss(keys[level], logits, f, local[level],
                                                temperature=temperature)
      return total

    has_params = bool(jax.tree_util.tree_leaves(cv["params"]))
    cv_grads = jax.grad(variance)(cv["params"]) if has_params else cv["params"]
    values = jax.lax.stop_gradient(values)
    updated = [estimator.update(c, jax.lax.stop_gradient(lg), values) for c, lg in zip(cvs, path)]
    new_cv = {"params": [c["params"] for c in updated], "state": [c["state"] for c in updated]}
    return gumbax.estimators.StepGradients(loss, grads, cv_grads, new_cv)

  def _eval_chunk(self, params, key, images, num_samples, temperature):
    del temperature  # no slope annealing here
    x, y = images[:, :HALF], images[:, HALF:]

    def one(k):
      h = x
      for level in range(self.depth):
        h = self.flatten(self.draw(jax.random.fold_in(k, level), self.logits(params, level, h)))
      return -self.nll_given(params, h, y)

    log_lik = jax.vmap(one)(jax.random.split(key, num_samples))
    return {"nll": -_mnist.log_mean_exp(log_lik, axis=0),
            "single_sample_nll": -jnp.mean(log_lik, axis=0)}
