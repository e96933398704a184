"""The MNIST VAE with discrete latents of Jang et al. (2017), Table 1 (VAE rows).

Encoder ``784 -> 512 -> 256 -> latent logits`` (ReLU), decoder ``latents -> 256 ->
512 -> 784`` Bernoulli logits, one layer of ``num_latents`` Bernoulli variables or
``num_latents`` categorical variables of ``num_classes`` classes; uniform or learned
prior. Training minimizes ``E_q[-log p(x|z)] + KL(q(z|x) || p(z))`` with the KL in
closed form and the reconstruction term's gradient from the estimator.

With slope annealing (``temperature.slope``, Chung et al. 2016) ``q(z|x)`` has the
encoder's logits divided by the scheduled temperature tau: training samples, and the
KL sees, the tempered distribution, and the estimator runs at temperature 1; the
evaluation uses tau of the last training step before it.

Evaluation, in nats per example, with discrete samples ``z ~ q(z|x)``:
``neg_elbo`` = mean of ``-log p(x|z)`` over the m samples plus the exact KL, and
``nll`` = ``-log (1/m) sum_i p(x, z_i) / q(z_i|x)``, the importance-weighted bound
(Burda et al. 2016) that upper-bounds the negative log-likelihood; ``kl`` and
``entropy``, the closed-form KL to the prior and entropy ``H(q(z|x))``, each summed
over the latents. Under the uniform prior ``kl = sum log K - entropy`` (K = 2 for a
Bernoulli latent), so an encoder with a small KL keeps its samples noisy; a learned
prior allows a small KL with a nearly deterministic ``q``.

References:
  Jang, Gu, Poole, Categorical Reparameterization with Gumbel-Softmax, 2017
  (arXiv 1611.01144); Chung, Ahn, Bengio, Hierarchical Multiscale Recurrent Neural
  Networks, 2016 (arXiv 1609.01704), slope annealing; Burda, Grosse,
  Salakhutdinov, Importance Weighted Autoencoders, 2016 (arXiv 1509.00519).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

import gumbax
from gumbax import networks
from experiments.tasks import _mnist

PIXELS = 784


class Vae(_mnist.MnistTask):
  """Discrete-latent VAE on binarized MNIST."""

  supports_slope_annealing = True

  def init(self, key):
    c = self.config
    k_enc, k_dec = jax.random.split(key)
    width = math.prod(self.latent_shape)
    params = {"encoder": networks.mlp_init(k_enc, [PIXELS, *c.encoder, width]),
              "decoder": networks.mlp_init(k_dec, [width, *c.decoder, PIXELS])}
    if c.prior == "learned":
      params["prior"] = jnp.zeros(self.latent_shape, jnp.float32)
    return params

  def encode(self, params, x):
    return networks.mlp_apply(params["encoder"], x).reshape(x.shape[:-1] + self.latent_shape)

  def log_likelihood(self, params, z, x):
    """``log p(x | z)`` for (relaxed or discrete) latents ``z``."""
    flat = z.reshape(z.shape[:z.ndim - len(self.latent_shape)] + (-1,))
    return _mnist.bernoulli_log_likelihood(networks.mlp_apply(params["decoder"], flat), x)

  def prior_logits(self, params):
    return params.get("prior", jnp.zeros(self.latent_shape, jnp.float32))

  def kl(self, params, logits):
    """``KL(q(z|x) || p(z))`` in closed form, per example.

    The encoder's logits are finite, so the KL and the entropy take
    ``masked=False``: the plain formula, which keeps the metrics bit-identical to
    this task's earlier versions (the masked-safe guards change XLA's rounding).
    """
    prior = self.prior_logits(params)
    if self.categorical:
      return jnp.sum(gumbax.categorical_kl(logits, prior, masked=False), axis=-1)
    return jnp.sum(gumbax.bernoulli_kl(logits, prior), axis=-1)

  def entropy(self, logits):
    """The entropy ``H(q(z|x))`` in closed form, summed over the latents, per example."""
    if self.categorical:
      return jnp.sum(gumbax.categorical_entropy(logits, masked=False), axis=-1)
    return jnp.sum(gumbax.bernoulli_entropy(logits), axis=-1)

  def log_prob(self, logits, z):
    """``log q(z)`` of discrete ``z`` under ``logits`` (one value per example)."""
    if self.categorical:
      return jnp.sum(z * jax.nn.log_softmax(logits), axis=(-2, -1))
    return jnp.sum(z * logits - jax.nn.softplus(logits), axis=-1)

  def q_logits(self, params, x, temperature=1.0):
    """The logits of ``q(z|x)``: the encoder's, divided by ``temperature`` under slope
    annealing (otherwise ``temperature`` is ignored)."""
    logits = self.encode(params, x)
    return logits / temperature if self.slope_annealing else logits

  def model(self, params, batch, temperature=1.0):
    return (self.q_logits(params, batch, temperature),
            lambda z: -self.log_likelihood(params, z, batch))

  def gradients(self, estimator, key, params, cv, batch, temperature=None):
    tau = 1.0
    if self.slope_annealing:  # the schedule's tau moves into q; the estimator runs at 1
      if temperature is None:
        raise ValueError("slope annealing divides the logits by the step's temperature: "
                         "pass `temperature` (the schedule's tau) to gradients.")
      tau, temperature = temperature, 1.0
    out = gumbax.estimators.value_and_grads(
        estimator, key, lambda p: self.model(p, batch, tau), params, cv, temperature=temperature)
    kl, kl_grads = jax.value_and_grad(
        lambda p: jnp.mean(self.kl(p, self.q_logits(p, batch, tau))))(params)
    grads = jax.tree_util.tree_map(jnp.add, out.grads, kl_grads)
    return out._replace(loss=out.loss + kl, grads=grads)

  def _eval_chunk(self, params, key, x, num_samples, temperature):
    logits = self.q_logits(params, x, temperature)
    keys = jax.random.split(key, num_samples)
    z = jax.vmap(lambda k: self.draw(k, logits))(keys)         # (m, batch) + latent
    log_lik = jax.vmap(lambda s: self.log_likelihood(params, s, x))(z)
    prior = jnp.broadcast_to(self.prior_logits(params), logits.shape)
    log_prior = jax.vmap(lambda s: self.log_prob(prior, s))(z)
    log_q = jax.vmap(lambda s: self.log_prob(logits, s))(z)
    kl = self.kl(params, logits)
    return {"neg_elbo": -jnp.mean(log_lik, axis=0) + kl,
            "nll": -_mnist.log_mean_exp(log_lik + log_prior - log_q, axis=0),
            "reconstruction": -jnp.mean(log_lik, axis=0), "kl": kl,
            "entropy": self.entropy(logits)}
