"""The VAE task's slope annealing: q's logits are the encoder's divided by tau.

A slope-annealed model at temperature tau is the plain model whose last encoder
layer is divided by tau: the same losses, samples and evaluation, and gradients
that differ only by the chain rule's 1/tau on that layer.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gumbax
from _tolerance import assert_f32_close
from experiments import config as cfg_lib
from experiments.tasks.structured import StructuredOutput
from experiments.tasks.vae import Vae

TAU = 0.6


def _tasks(distribution):
  config = cfg_lib.VaeTask(distribution=distribution, num_latents=3, num_classes=4,
                           encoder=[16], decoder=[16])
  plain = Vae(config, batch_size=5, data_config=None)
  sloped = Vae(config, batch_size=5, data_config=None, slope_annealing=True)
  params = plain.init(jax.random.key(0))
  batch = jax.random.bernoulli(jax.random.key(1), 0.3, (5, 784)).astype(jnp.float32)
  return plain, sloped, params, batch


def _divide_last_encoder_layer(params, tau):
  layers = list(params["encoder"])
  layers[-1] = jax.tree_util.tree_map(lambda w: w / tau, layers[-1])
  return {**params, "encoder": layers}


@pytest.mark.parametrize("distribution", ["bernoulli", "categorical"])
@pytest.mark.parametrize("transform", ["none", "jit"])
def test_slope_annealing_is_the_plain_model_with_tempered_logits(distribution, transform):
  plain, sloped, params, batch = _tasks(distribution)
  st = gumbax.estimators.get("straight_through", distribution=distribution)
  key = jax.random.key(2)

  def sloped_grads(tau):
    return sloped.gradients(st, key, params, {}, batch, tau)

  fn = jax.jit(sloped_grads) if transform == "jit" else sloped_grads
  out = fn(jnp.float32(TAU))
  ref = plain.gradients(st, key, _divide_last_encoder_layer(params, TAU), {}, batch)
  np.testing.assert_allclose(out.loss, ref.loss, rtol=1e-5)
  expected = _divide_last_encoder_layer(ref.grads, TAU)  # d/dw of f(w / tau)
  for got, want in zip(jax.tree_util.tree_leaves(out.grads), jax.tree_util.tree_leaves(expected)):
    # Two float32 backward passes (logits / tau against a divided layer, jit against
    # eager): a gradient entry sums products of the size of the leaf's largest entries,
    # so near-zero entries get atol = 32 eps32 * max|leaf| (a fixed 1e-6 was ~2 ulps of
    # the largest leaves).
    assert_f32_close(got, want, want, ulps=32, rtol=1e-4)
  # Without slope annealing the temperature stays in the estimator's backward pass:
  # the loss (sample and KL) is that of the untempered encoder.
  untempered = plain.gradients(dataclasses.replace(st, temperature=TAU), key, params, {}, batch)
  np.testing.assert_allclose(untempered.loss,
                             plain.gradients(st, key, params, {}, batch).loss, rtol=1e-6)
  assert abs(float(untempered.loss) - float(out.loss)) > 1e-3


@pytest.mark.parametrize("distribution", ["bernoulli", "categorical"])
def test_slope_annealed_evaluation_uses_the_temperature_under_vmap(distribution):
  plain, sloped, params, batch = _tasks(distribution)
  keys = jax.random.split(jax.random.key(3), 2)
  taus = jnp.array([TAU, 1.0], jnp.float32)
  got = jax.vmap(lambda k, t: sloped._eval_chunk(params, k, batch, 6, t))(keys, taus)
  num_classes = 4 if distribution == "categorical" else 2
  for i, tau in enumerate([TAU, 1.0]):
    want = plain._eval_chunk(_divide_last_encoder_layer(params, tau), keys[i], batch, 6, 1.0)
    # vmapped float32 against unvmapped float32 (and logits / tau against a divided
    # layer): equal only up to rounding, which is absolute in the terms' magnitude.
    # The KL (~1e-3 here) is sum q log q - sum q log p, terms of total size
    # S = H + 3 log K ~ 2..8, so it needs atol ~ eps32 * S, not a bare rtol (a 2-core
    # EPYC missed rtol=1e-5 by 2.8e-8).  The log-likelihood sums behind neg_elbo and nll
    # add terms of one sign, so their magnitude is S too.
    kl_scale = np.asarray(want["entropy"]) + 3 * np.log(num_classes)
    scales = {"neg_elbo": np.abs(want["neg_elbo"]) + kl_scale,
              "nll": np.abs(want["neg_elbo"]) + kl_scale, "kl": kl_scale, "entropy": kl_scale}
    for name in ("neg_elbo", "nll", "kl", "entropy"):
      assert_f32_close(got[name][i], want[name], scales[name], ulps=16, rtol=1e-5, err_msg=name)
  # The plain model ignores the temperature.
  a = plain._eval_chunk(params, keys[0], batch, 6, TAU)
  b = plain._eval_chunk(params, keys[0], batch, 6, 1.0)
  np.testing.assert_allclose(a["neg_elbo"], b["neg_elbo"])


@pytest.mark.parametrize("distribution", ["bernoulli", "categorical"])
def test_evaluated_entropy_is_q_s_and_completes_the_uniform_prior_kl(distribution):
  plain, _, params, batch = _tasks(distribution)
  out = jax.jit(plain._eval_chunk, static_argnums=3)(params, jax.random.key(4), batch, 3, 1.0)
  logits = np.asarray(plain.encode(params, batch), np.float64)
  if distribution == "categorical":
    q = np.exp(logits - logits.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    want = -np.sum(q * np.log(q), axis=(-2, -1))
  else:
    q = 1 / (1 + np.exp(-logits))
    want = -np.sum(q * np.log(q) + (1 - q) * np.log1p(-q), axis=-1)
  # float32 (jitted) against a float64 reference: log q = l - logsumexp(l) rounds at the
  # size of the logits, so H = -sum q log q is off by ~eps32 * sum q (|l| + |lse|) however
  # small H is: atol = 16 eps32 * 3 (log K + 2 max|l|) on top of the rtol.
  entropy_scale = 3 * (np.log(4 if distribution == "categorical" else 2)
                       + 2 * np.max(np.abs(logits.reshape(len(logits), -1)), axis=-1))
  assert_f32_close(out["entropy"], want, entropy_scale, ulps=16, rtol=1e-5)
  assert np.all(want > 0.01)
  # Uniform prior: KL = sum over latents of log K, minus the entropy.
  num_classes = 4 if distribution == "categorical" else 2
  np.testing.assert_allclose(out["kl"] + out["entropy"], 3 * np.log(num_classes), rtol=1e-5)
  # A learned prior away from uniform breaks that identity.
  learned = Vae(plain.config.model_copy(update={"prior": "learned"}), batch_size=5, data_config=None)
  shifted = {**params, "prior": jnp.full(learned.latent_shape, 0.0).at[..., 0].set(2.0)}
  other = learned._eval_chunk(shifted, jax.random.key(4), batch, 3, 1.0)
  # Eager against jitted float32 (the prior does not enter H): rounding, sized as above.
  assert_f32_close(other["entropy"], out["entropy"], entropy_scale, ulps=16, rtol=1e-6)
  assert np.all(np.abs(other["kl"] + other["entropy"] - 3 * np.log(num_classes)) > 1e-2)


def test_tasks_without_slope_annealing_refuse_it():
  config = cfg_lib.StructuredTask(num_latents=2)
  with pytest.raises(ValueError, match="does not support slope annealing"):
    StructuredOutput(config, batch_size=3, data_config=None, slope_annealing=True)
