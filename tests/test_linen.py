"""Flax linen layers: jit/vmap, parity with the NNX layers, training, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gumbax
from gumbax import linen as glinen
from gumbax import nnx as gnnx

# The same shapes as tests/test_nnx.py, so compiled kernels are shared in one run.
RNG = np.random.default_rng(1)
LOGITS = jnp.asarray(RNG.normal(size=(2, 3, 4)), jnp.float32)
X = jnp.asarray(RNG.normal(size=(2, 5)), jnp.float32)
KEY = jax.random.key(42)


def test_apply_under_jit_and_vmap():
  layer = glinen.GumbelSoftmax(0.5, hard=True)

  def sample(key):
    return layer.apply({}, LOGITS, deterministic=False, rngs={"gumbel": key})

  keys = jnp.stack([jax.random.key(i) for i in range(3)])
  batched = jax.jit(jax.vmap(sample))(keys)
  for i in range(3):
    np.testing.assert_array_equal(batched[i], sample(keys[i]))
  np.testing.assert_array_equal(batched.sum(-1), 1.0)
  assert not np.array_equal(batched[0], batched[1])   # training mode changes with the key
  evaluation = layer.apply({}, LOGITS, deterministic=True)
  np.testing.assert_array_equal(evaluation, jax.nn.one_hot(jnp.argmax(LOGITS, -1), 4))
  np.testing.assert_array_equal(layer.apply({}, LOGITS, deterministic=True, rngs={"gumbel": KEY}),
                                evaluation)


def test_explicit_key_is_the_library_sample_and_call_time_deterministic_wins():
  layer = glinen.RelaxedBernoulli(2 / 3, deterministic=True)
  y = layer.apply({}, LOGITS, deterministic=False, rng=KEY)
  np.testing.assert_array_equal(y, gumbax.relaxed_bernoulli(KEY, LOGITS, 2 / 3))
  np.testing.assert_array_equal(layer.apply({}, LOGITS), (LOGITS > 0).astype(jnp.float32))


def nnx_params(module):
  return {"params": nnx.to_pure_dict(nnx.state(module, nnx.Param))}


PARITY = {
    "gumbel_softmax_hard_learned": (
        lambda: gnnx.GumbelSoftmax(0.5, hard=True, learn_temperature=True, temperature_shape=(3,)),
        lambda: glinen.GumbelSoftmax(0.5, hard=True, learn_temperature=True,
                                     temperature_shape=(3,)), LOGITS),
    "gumbel_softmax_axis1_softmax_eval": (
        lambda: gnnx.GumbelSoftmax(2.0, axis=1, eval_mode="softmax"),
        lambda: glinen.GumbelSoftmax(2.0, axis=1, eval_mode="softmax"), LOGITS),
    "relaxed_bernoulli_learned": (
        lambda: gnnx.RelaxedBernoulli(0.7, learn_temperature=True, eval_mode="softmax"),
        lambda: glinen.RelaxedBernoulli(0.7, learn_temperature=True, eval_mode="softmax"), LOGITS),
}
for _name, _kl, _prior in [("relaxed", "relaxed", "learned"), ("straight_through", "analytic",
                                                                "uniform"),
                           ("straight_through_gumbel", "relaxed", "uniform"),
                           ("reinmax", "analytic", "learned")]:
  PARITY[f"latent_{_name}_{_kl}_{_prior}"] = (
      lambda n=_name, k=_kl, p=_prior: gnnx.CategoricalLatent(
          5, 3, 4, estimator=n, kl=k, prior=p, temperature=0.6, learn_temperature=True,
          temperature_shape=(3,), rngs=nnx.Rngs(0)),
      lambda n=_name, k=_kl, p=_prior: glinen.CategoricalLatent(
          3, 4, estimator=n, kl=k, prior=p, temperature=0.6, learn_temperature=True,
          temperature_shape=(3,)), X)


@pytest.mark.parametrize("name", sorted(PARITY))
def test_nnx_and_linen_give_identical_outputs(name):
  make_nnx, make_linen, inputs = PARITY[name]
  module = make_nnx()
  # Move every parameter off its initial value, so that copying is really tested.
  for path, variable in nnx.iter_graph(module):
    if isinstance(variable, nnx.Param):
      variable[...] = variable[...] + 0.1 * jnp.asarray(
          RNG.normal(size=variable[...].shape), jnp.float32)
  linen_module = make_linen()
  shapes = jax.eval_shape(lambda: linen_module.init(KEY, inputs, deterministic=True))
  variables = nnx_params(module)
  assert (jax.tree.map(jnp.shape, variables["params"])
          == jax.tree.map(jnp.shape, dict(shapes).get("params", {})))
  for det in (False, True):
    want = module(inputs, deterministic=det, rngs=KEY)
    got = linen_module.apply(variables, inputs, deterministic=det, rng=KEY)
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_gradients_are_identical_too():
  module = PARITY["latent_relaxed_relaxed_learned"][0]()
  linen_module = PARITY["latent_relaxed_relaxed_learned"][1]()
  variables = nnx_params(module)
  target = jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32)

  def objective(out):
    return jnp.sum(out.sample * target[None]) + jnp.sum(out.kl)

  graphdef, params, rest = nnx.split(module, nnx.Param, ...)

  @jax.jit   # one compilation for both gradients
  def both(params, variables):
    g_nnx = jax.grad(lambda p: objective(
        nnx.merge(graphdef, p, rest)(X, deterministic=False, rngs=KEY)))(params)
    g_linen = jax.grad(lambda v: objective(
        linen_module.apply(v, X, deterministic=False, rng=KEY)))(variables)
    return nnx.to_pure_dict(g_nnx), g_linen["params"]

  g_nnx, g_linen = both(params, variables)
  assert jax.tree.structure(g_nnx) == jax.tree.structure(g_linen)
  for w, g in zip(jax.tree.leaves(g_nnx), jax.tree.leaves(g_linen)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  assert np.all(np.abs(g_linen["log_temperature"]) > 0)


class Encoder(nn.Module):
  """A model with a latent layer inside, as a linen user writes it."""

  @nn.compact
  def __call__(self, x, train: bool):
    return glinen.CategoricalLatent(3, 4, estimator="straight_through_gumbel", prior="learned",
                                    learn_temperature=True, temperature_shape=(3,),
                                    name="latent")(nn.tanh(x), deterministic=not train)


def test_training_step_decreases_the_loss_and_temperature_stays_positive():
  model = Encoder()
  variables = model.init(KEY, X, train=True)              # init draws from 'params'
  target = jax.nn.one_hot(jnp.array([[0, 1, 2], [3, 2, 1]]), 4)
  optimizer = optax.adam(0.1)
  opt_state = optimizer.init(variables)

  def loss_fn(v, key):
    out = model.apply(v, X, train=True, rngs={"gumbel": key})
    return jnp.mean(-jnp.sum(out.sample * target, axis=(1, 2)) + 0.01 * out.kl)

  @jax.jit
  def step(v, s, key):
    loss, grads = jax.value_and_grad(loss_fn)(v, key)
    updates, s = optimizer.update(grads, s, v)
    return optax.apply_updates(v, updates), s, loss, grads

  losses = []
  for i in range(40):
    variables, opt_state, loss, grads = step(variables, opt_state, jax.random.key(i))
    losses.append(float(loss))
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0
  assert np.any(np.abs(grads["params"]["latent"]["log_temperature"]) > 0)
  tau = np.exp(np.asarray(variables["params"]["latent"]["log_temperature"]))
  assert np.all(tau > 0) and np.all(np.isfinite(tau))
  evaluation = model.apply(variables, X, train=False)
  assert float(jnp.sum(evaluation.sample * target)) == 6.0   # every latent decodes its target


def test_error_when_deterministic_is_unset():
  with pytest.raises(ValueError, match="No `deterministic` value") as info:
    glinen.GumbelSoftmax().apply({}, LOGITS, rngs={"gumbel": KEY})
  message = str(info.value)
  assert "deterministic=False)" in message and "deterministic=not train" in message


def test_error_when_the_rng_stream_is_missing():
  layer = glinen.CategoricalLatent(3, 4, deterministic=False)
  variables = layer.init(KEY, X)                          # init falls back to 'params'
  for rngs in ({}, {"params": KEY}, {"dropout": KEY}):    # never a silent fallback in apply
    with pytest.raises(ValueError, match="needs a random key from the 'gumbel' rng stream") as info:
      layer.apply(variables, X, rngs=rngs)
    message = str(info.value)
    assert "rngs={'gumbel': jax.random.key(1)}" in message and "deterministic=True" in message
  layer.apply(variables, X, deterministic=True)
  custom = glinen.GumbelSoftmax(deterministic=False, rng_collection="noise")
  with pytest.raises(ValueError, match="'noise' rng stream"):
    custom.apply({}, LOGITS, rngs={"gumbel": KEY})
  custom.apply({}, LOGITS, rngs={"noise": KEY})


def test_invalid_arguments_fail_at_construction():
  with pytest.raises(ValueError, match=r"pathwise estimator.*'reinmax'.*got 'arm'"):
    glinen.CategoricalLatent(3, 4, estimator="arm")
  with pytest.raises(ValueError, match="`eval_mode` must be one of"):
    glinen.GumbelSoftmax(eval_mode="sample")
  with pytest.raises(ValueError, match="`temperature` must be > 0"):
    glinen.RelaxedBernoulli(-1.0)
