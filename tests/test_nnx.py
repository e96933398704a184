"""Flax NNX layers: sampling, modes, rng streams, learned temperature, KL, errors, training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy import special

import gumbax
from _tolerance import assert_f32_close, f32_tol
from gumbax import nnx as gnnx
from gumbax import schedules

# Inputs from NumPy (each new shape of a JAX random draw costs a compilation); keys
# made without splitting for the same reason.
RNG = np.random.default_rng(0)
LOGITS = jnp.asarray(RNG.normal(size=(2, 3, 4)), jnp.float32)
X = jnp.asarray(RNG.normal(size=(2, 5)), jnp.float32)
PRIOR = jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32)
KEY = jax.random.key(42)


def assert_one_hot(y, axis=-1):
  y = np.asarray(y)
  assert set(np.unique(y)) <= {0.0, 1.0}
  np.testing.assert_array_equal(y.sum(axis), 1.0)


# -- GumbelSoftmax / RelaxedBernoulli ---------------------------------------------


@pytest.mark.parametrize("hard", [False, True])
def test_gumbel_softmax_training_is_the_library_sample(hard):
  layer = gnnx.GumbelSoftmax(0.5, hard=hard, axis=1, deterministic=False)
  y = layer(LOGITS, rngs=KEY)
  np.testing.assert_array_equal(y, gumbax.gumbel_softmax(KEY, LOGITS, 0.5, hard=hard, axis=1))
  if hard:
    assert_one_hot(y, axis=1)
  else:
    assert np.all((np.asarray(y) > 0) & (np.asarray(y) < 1))


def test_relaxed_bernoulli_training_and_eval():
  layer = gnnx.RelaxedBernoulli(2 / 3, hard=True, rngs=nnx.Rngs(gumbel=0))
  y = layer(LOGITS, deterministic=False, rngs=KEY)
  np.testing.assert_array_equal(y, gumbax.relaxed_bernoulli(KEY, LOGITS, 2 / 3, hard=True))
  np.testing.assert_array_equal(layer(LOGITS, deterministic=True), (LOGITS > 0).astype(jnp.float32))
  soft = gnnx.RelaxedBernoulli(2.0, eval_mode="softmax", deterministic=True)(LOGITS)
  np.testing.assert_allclose(soft, jax.nn.sigmoid(LOGITS / 2.0), rtol=1e-6)


def test_deterministic_modes_are_deterministic_and_documented():
  argmax = gnnx.GumbelSoftmax(0.5, deterministic=True, rngs=nnx.Rngs(0))
  a, b = argmax(LOGITS), argmax(LOGITS, rngs=KEY)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, jax.nn.one_hot(jnp.argmax(LOGITS, -1), 4))
  softmax = gnnx.GumbelSoftmax(0.5, hard=True, eval_mode="softmax", deterministic=True)
  np.testing.assert_allclose(softmax(LOGITS), jax.nn.softmax(LOGITS / 0.5), rtol=1e-6)


def test_training_mode_changes_with_the_key_and_the_stream_advances():
  layer = gnnx.GumbelSoftmax(1.0, rngs=nnx.Rngs(gumbel=0), deterministic=False)
  first, second = layer(LOGITS), layer(LOGITS)
  assert not np.allclose(first, second)           # the stream gives a new key per call
  other = layer(LOGITS, rngs=jax.random.key(7))
  assert not np.allclose(layer(LOGITS, rngs=KEY), other)
  np.testing.assert_array_equal(layer(LOGITS, rngs=KEY), layer(LOGITS, rngs=KEY))
  # Same seed, same samples: the stream is reproducible.
  again = gnnx.GumbelSoftmax(1.0, rngs=nnx.Rngs(gumbel=0), deterministic=False)
  np.testing.assert_array_equal(again(LOGITS), first)


def test_default_stream_is_used_and_never_rngs_gumbel_sampler():
  # nnx.Rngs has a `gumbel` *sampling method*; the layer must take the stream by name.
  layer = gnnx.GumbelSoftmax(1.0, rngs=nnx.Rngs(0), deterministic=False)
  y = layer(LOGITS)
  np.testing.assert_allclose(np.asarray(y).sum(-1), 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="neither a 'gumbel' nor a 'default' stream"):
    layer(LOGITS, rngs=nnx.Rngs(params=1))


def test_call_time_deterministic_wins_and_train_eval_view():
  layer = gnnx.GumbelSoftmax(1.0, deterministic=True, rngs=nnx.Rngs(gumbel=0))
  assert_one_hot(layer(LOGITS))
  assert not np.allclose(layer(LOGITS, deterministic=False), layer(LOGITS))
  layer.train()
  assert layer.deterministic is False
  view = nnx.view(layer, deterministic=True)
  assert_one_hot(view(LOGITS))
  layer.eval()
  assert_one_hot(layer(LOGITS))


def test_under_nnx_jit():
  layer = gnnx.GumbelSoftmax(0.7, hard=True, rngs=nnx.Rngs(gumbel=3), deterministic=False)
  call = nnx.jit(lambda m, x: m(x))
  a, b = call(layer, LOGITS), call(layer, LOGITS)
  assert not np.array_equal(a, b)                     # the stream advances under jit
  assert_one_hot(a)
  twin = gnnx.GumbelSoftmax(0.7, hard=True, rngs=nnx.Rngs(gumbel=3), deterministic=False)
  np.testing.assert_array_equal(a, twin(LOGITS))      # jit matches eager, stream included


def test_under_jax_jit_and_vmap_with_a_scheduled_temperature():
  layer = gnnx.GumbelSoftmax(1.0, deterministic=False)
  schedule = schedules.exponential_annealing(1.0, 0.1, 0.2, 1)
  keys = jnp.stack([jax.random.key(i) for i in range(3)])
  call = jax.jit(jax.vmap(lambda k, step: layer(LOGITS, temperature=schedule(step), rngs=k),
                          in_axes=(0, None)))
  batched = call(keys, 5)
  for i in range(3):
    want = gumbax.gumbel_softmax(keys[i], LOGITS, float(np.exp(-0.5)))
    np.testing.assert_allclose(batched[i], want, rtol=1e-5, atol=1e-7)
  assert not np.allclose(batched[0], batched[1])


# -- learned temperature ------------------------------------------------------------


def test_learned_per_latent_temperature_gets_a_gradient_and_stays_positive():
  layer = gnnx.GumbelSoftmax(0.5, learn_temperature=True, temperature_shape=(3,),
                             deterministic=False)
  np.testing.assert_allclose(layer.log_temperature[...], np.log(0.5) * np.ones(3), rtol=1e-6)
  target = jnp.arange(4.0).reshape(1, 1, 4)

  def loss(m, key):
    return jnp.sum(m(LOGITS, rngs=key) * target)

  optimizer = nnx.Optimizer(layer, optax.sgd(50.0), wrt=nnx.Param)

  @nnx.jit
  def step(m, o, key):   # returns the gradient computed before the update
    grads = nnx.grad(loss)(m, key)
    o.update(m, grads)
    return grads.log_temperature[...]

  g = np.asarray(step(layer, optimizer, KEY))
  assert g.shape == (3,) and np.all(np.abs(g) > 1e-6)
  # Large updates in either direction keep the temperature positive and outputs finite.
  for i in range(4):
    step(layer, optimizer, jax.random.key(i))
  assert np.all(np.isfinite(layer.log_temperature[...]))
  assert np.all(np.isfinite(layer(LOGITS, rngs=KEY)))
  # Far outside the range, the forward value is clamped to [min_temperature, e^80]
  # and the gradients stay finite.
  layer.log_temperature[...] = jnp.array([-60.0, 0.0, 60.0])
  want = gumbax.gumbel_softmax(KEY, LOGITS, jnp.array([1e-3, 1.0, np.exp(60.0)]))
  np.testing.assert_allclose(layer(LOGITS, rngs=KEY), want, rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(step(layer, optimizer, KEY)))
  assert np.all(np.isfinite(layer.log_temperature[...]))
  with pytest.raises(ValueError, match="learns its temperature"):
    layer(LOGITS, temperature=0.3, rngs=KEY)


# -- CategoricalLatent ------------------------------------------------------------

def make_latent(**kwargs):
  return gnnx.CategoricalLatent(5, 3, 4, rngs=nnx.Rngs(0), **kwargs)


@pytest.mark.parametrize("estimator", [
    "relaxed", "straight_through", "straight_through_gumbel", "reinmax",
    # Gumbel-Rao's conditional sampler takes ~5 s to compile on a CPU.
    pytest.param("gumbel_rao", marks=pytest.mark.slow)])
def test_latent_sample_is_the_estimator_sample(estimator):
  latent = make_latent(estimator=estimator, temperature=0.5, deterministic=False)
  out = latent(X, rngs=KEY)
  logits = latent.dense(X).reshape(2, 3, 4)
  np.testing.assert_allclose(out.logits, logits, rtol=1e-6)
  want = gumbax.estimators.get(estimator, temperature=0.5).sample_with_gradient(KEY, logits)
  np.testing.assert_allclose(out.sample, want, rtol=1e-5, atol=1e-7)
  assert out.kl.shape == (2,)
  if estimator != "relaxed":
    assert_one_hot(out.sample)


def test_latent_analytic_kl_matches_numpy_with_a_learned_prior():
  latent = make_latent(prior="learned", kl="analytic", deterministic=False)
  latent.prior_logits[...] = PRIOR
  out = latent(X, rngs=KEY)
  logits = np.asarray(out.logits, np.float64)
  prior = np.asarray(latent.prior_logits[...], np.float64)
  q = special.softmax(logits, -1)
  p = special.softmax(prior, -1)[None]
  # float32 against float64: the KL is sum q log q - sum q log p, so its rounding is
  # absolute, ~eps32 * S with S = sum q (|log q| + |log p|) (~8 here; the KL ~0.5).
  scale = np.sum(q * (np.abs(np.log(q)) + np.abs(np.log(p))), axis=(1, 2))
  assert_f32_close(out.kl, np.sum(q * np.log(q / p), axis=(1, 2)), scale, ulps=16, rtol=1e-5)
  np.testing.assert_allclose(latent(X, deterministic=True).kl, out.kl, rtol=1e-6)


def numpy_exp_concrete_log_prob(x, logits, tau):
  """Maddison et al. (2017), appendix C, in float64."""
  k = x.shape[-1]
  terms = logits - tau * x
  return (special.gammaln(k) + (k - 1) * np.log(tau) + terms.sum(-1)
          - k * special.logsumexp(terms, axis=-1))


def exp_concrete_log_prob_scale(x, logits, tau):
  """The magnitude of the terms numpy_exp_concrete_log_prob adds, summed over the latents:
  float32 computes log q - log p up to a few ulps of it, however small the KL."""
  k = x.shape[-1]
  terms = logits - tau * x
  return np.sum(abs(special.gammaln(k)) + (k - 1) * abs(np.log(tau)) + np.abs(terms).sum(-1)
                + k * np.abs(special.logsumexp(terms, axis=-1)), axis=-1)


def test_latent_relaxed_kl_is_log_q_minus_log_p_at_the_samples_noise():
  tau = 0.7
  latent = make_latent(prior="learned", kl="relaxed", temperature=tau, deterministic=False)
  latent.prior_logits[...] = PRIOR
  out = latent(X, rngs=KEY)
  x = gumbax.log_gumbel_softmax(KEY, out.logits, tau)
  # The same noise, two formulas: exp(log-softmax) against softmax differ by ulps of the
  # tempered scores (~|x|) in the exponent, a relative error of the sample.
  np.testing.assert_allclose(np.exp(x), out.sample, rtol=max(1e-5, f32_tol(x, 16)), atol=1e-6)
  x, logits = np.asarray(x, np.float64), np.asarray(out.logits, np.float64)
  prior = np.broadcast_to(np.asarray(latent.prior_logits[...], np.float64), logits.shape)
  want = (numpy_exp_concrete_log_prob(x, logits, tau)
          - numpy_exp_concrete_log_prob(x, prior, tau)).sum(-1)
  scale = (exp_concrete_log_prob_scale(x, logits, tau)
           + exp_concrete_log_prob_scale(x, prior, tau))   # ~90 here, the KL ~1
  assert_f32_close(out.kl, want, scale, ulps=16, rtol=1e-4)
  assert not np.allclose(latent(X, rngs=jax.random.key(9)).kl, out.kl)


@pytest.mark.parametrize("kl", ["analytic", "relaxed"])
def test_latent_kl_vanishes_when_the_posterior_is_the_prior(kl):
  latent = make_latent(prior="learned", kl=kl, deterministic=False)
  prior = PRIOR
  latent.prior_logits[...] = prior
  latent.dense.kernel[...] = jnp.zeros((5, 12))
  latent.dense.bias[...] = prior.reshape(12) + 3.0     # a shift does not change the distribution
  out = latent(X, rngs=KEY)
  # Zero only up to float32 rounding of log q - log p (and of prior + 3), which is absolute
  # in the terms' magnitude: ~90 for the relaxed KL (it gave -5e-6 against a former fixed
  # atol of 1e-5); the same bound serves the analytic KL (terms ~8, it gives ~1e-9).
  logits = np.asarray(out.logits, np.float64)
  x = np.asarray(gumbax.log_gumbel_softmax(KEY, out.logits, 1.0), np.float64)
  scale = (exp_concrete_log_prob_scale(x, logits, 1.0)
           + exp_concrete_log_prob_scale(x, logits - 3.0, 1.0))
  assert_f32_close(out.kl, 0.0, scale, ulps=16)


def test_latent_deterministic_mode_is_the_argmax():
  latent = make_latent(estimator="straight_through_gumbel")
  out = latent(X, deterministic=True)
  np.testing.assert_array_equal(out.sample, jax.nn.one_hot(jnp.argmax(out.logits, -1), 4))
  np.testing.assert_array_equal(latent(X, deterministic=True, rngs=KEY).sample, out.sample)
  a, b = latent(X, deterministic=False, rngs=KEY), latent(X, deterministic=False, rngs=KEY)
  np.testing.assert_array_equal(a.sample, b.sample)
  assert not np.array_equal(latent(X, deterministic=False, rngs=jax.random.key(8)).sample,
                            a.sample)


def test_latent_training_step_decreases_the_loss():
  latent = make_latent(estimator="straight_through_gumbel", kl="analytic", deterministic=False)
  target = jax.nn.one_hot(jnp.array([[0, 1, 2], [3, 2, 1]]), 4)
  optimizer = nnx.Optimizer(latent, optax.adam(0.1), wrt=nnx.Param)

  def loss_fn(m):
    out = m(X)
    return jnp.mean(-jnp.sum(out.sample * target, axis=(1, 2)) + 0.01 * out.kl)

  @nnx.jit
  def step(m, o):
    loss, grads = nnx.value_and_grad(loss_fn)(m)
    o.update(m, grads)
    return loss

  eval_loss = lambda: float(-jnp.sum(latent(X, deterministic=True).sample * target))
  before = eval_loss()
  losses = [float(step(latent, optimizer)) for _ in range(40)]
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0
  assert eval_loss() == -6.0 < before                    # every latent decodes its target


# -- errors ---------------------------------------------------------------------


def test_error_when_deterministic_is_unset():
  layer = gnnx.GumbelSoftmax(rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="No `deterministic` value") as info:
    layer(LOGITS)
  message = str(info.value)
  assert "deterministic=False)" in message and "model.eval()" in message and "nnx.view" in message
  with pytest.raises(ValueError, match="No `deterministic` value"):
    make_latent()(X)


@pytest.mark.parametrize("construct", [
    lambda: gnnx.GumbelSoftmax(deterministic=False),
    lambda: gnnx.RelaxedBernoulli(deterministic=False, rngs=nnx.Rngs(params=0)),
    lambda: gnnx.CategoricalLatent(5, 3, 4, deterministic=False, rngs=nnx.Rngs(params=0)),
])
def test_error_when_the_rng_stream_is_missing(construct):
  layer = construct()
  inputs = X if isinstance(layer, gnnx.CategoricalLatent) else LOGITS
  with pytest.raises(ValueError, match="needs a random key from the 'gumbel' rng stream") as info:
    layer(inputs)
  message = str(info.value)
  assert "nnx.Rngs(gumbel=0)" in message and "rngs=jax.random.key(1)" in message
  assert "deterministic=True" in message
  layer(inputs, deterministic=True)                     # evaluation needs no key
  layer(inputs, rngs=nnx.Rngs(gumbel=1))                # a stream at call time is enough


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": 0.0}, "`temperature` must be > 0"),
    ({"eval_mode": "mean"}, "`eval_mode` must be one of"),
    ({"temperature_shape": (3,)}, "only used with learn_temperature=True"),
    ({"learn_temperature": True, "temperature_shape": (0,)}, "`temperature_shape`"),
])
def test_invalid_layer_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    gnnx.GumbelSoftmax(**kwargs)


def test_invalid_latent_arguments():
  with pytest.raises(ValueError, match=r"pathwise estimator.*'gumbel_rao'.*'reinmax'.*'rloo'"):
    make_latent(estimator="rloo")
  with pytest.raises(ValueError, match="`prior` must be one of"):
    make_latent(prior="gaussian")
  with pytest.raises(ValueError, match="`kl` must be one of"):
    make_latent(kl="exact")
  with pytest.raises(ValueError, match="`num_classes` must be an int >= 1"):
    gnnx.CategoricalLatent(5, 3, 0, rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match="num_samples"):
    make_latent(estimator="relaxed", estimator_kwargs={"num_samples": 3})
  layer = make_latent(estimator="gumbel_rao", estimator_kwargs={"num_samples": 3})
  assert layer.estimator.num_samples == 3
