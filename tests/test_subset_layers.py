"""SubsetSelector (NNX and linen): the concrete autoencoder's feature-selector layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gumbax
from _tolerance import f32_tol

N, K = 7, 3
METHODS = ["concrete", "top_k"]


def _x(batch=(4,)):
  return jax.random.normal(jax.random.key(5), batch + (N,))


def _nnx(method, **kw):
  return gumbax.nnx.SubsetSelector(N, K, method=method, temperature=0.5,
                                   rngs=nnx.Rngs(params=0, gumbel=1), **kw)


@pytest.mark.parametrize("method", METHODS)
def test_shapes_and_deterministic_output_is_the_gather(method):
  layer = _nnx(method)
  assert layer.logits.shape == ((K, N) if method == "concrete" else (N,))
  for batch in [(), (4,), (2, 3)]:
    x = _x(batch)
    y = layer(x, deterministic=False)
    assert y.shape == batch + (K,) and y.dtype == x.dtype
    idx = layer.selected_indices()
    assert idx.shape == (K,) and idx.dtype == jnp.int32
    np.testing.assert_array_equal(layer(x, deterministic=True), x[..., idx])
  if method == "top_k":
    assert len(set(np.asarray(idx).tolist())) == K  # distinct, ascending
    assert np.all(np.diff(np.asarray(idx)) > 0)


def test_concrete_training_is_the_gumbel_softmax_sample_and_init_scale():
  layer = _nnx("concrete", hard=True)
  key = jax.random.key(9)
  x = _x()
  w = gumbax.gumbel_softmax(key, layer.logits[...], 0.5, hard=True)
  np.testing.assert_allclose(layer(x, deterministic=False, rngs=key), x @ w.T,
                             rtol=1e-6, atol=f32_tol(np.abs(x).max(), 16))
  # hard: each node is exactly one input feature
  y = np.asarray(layer(x, deterministic=False, rngs=key))
  assert all(np.any(np.all(y[:, j:j + 1] == np.asarray(x), axis=0)) for j in range(K))
  # Glorot normal: std sqrt(2 / (n + k)), a normal truncated at +-2 of its own scale
  # (sqrt(2 / (n + k)) / 0.8796, so that the truncated law has that std)
  big = gumbax.nnx.SubsetSelector(400, 100, rngs=nnx.Rngs(0)).logits[...]
  assert abs(float(big.std()) / np.sqrt(2 / 500) - 1) < 0.05
  assert float(jnp.abs(big).max()) <= 2 * np.sqrt(2 / 500) / 0.87962566 + 1e-6


@pytest.mark.parametrize("hard", [False, True])
def test_top_k_training_is_the_relaxed_mask_at_the_drawn_set(hard):
  layer = _nnx("top_k", hard=hard)
  layer.logits[...] = jax.random.normal(jax.random.key(3), (N,))
  key, x = jax.random.key(4), _x()
  mask = gumbax.relaxed_top_k(key, layer.logits[...], K, 0.5, hard=hard)
  index = np.sort(np.asarray(gumbax.gumbel_top_k(key, layer.logits[...], K)))
  y = layer(x, deterministic=False, rngs=key)
  np.testing.assert_allclose(y, (mask[None] * x)[:, index], rtol=1e-6, atol=1e-7)
  if hard:
    np.testing.assert_array_equal(y, x[:, index])


@pytest.mark.parametrize("method", METHODS)
def test_jit_vmap_grad_and_a_schedule(method):
  layer = _nnx(method)
  graphdef, state, rest = nnx.split(layer, nnx.Param, ...)
  schedule = gumbax.schedules.exponential_annealing(10.0, np.log(1000) / 100, 0.01, every=1)

  @jax.jit
  def loss(state, key, x, step):
    model = nnx.merge(graphdef, state, rest)
    return jnp.sum(model(x, deterministic=False, rngs=key, temperature=schedule(step)) ** 2)

  keys = jax.random.split(jax.random.key(0), 3)
  x = _x()
  grads = jax.grad(loss)(state, keys[0], x, 5)
  g = grads["logits"][...]
  assert g.shape == layer.logits.shape and bool(jnp.all(jnp.isfinite(g)))
  assert float(jnp.abs(g).max()) > 0
  vals = jax.vmap(loss, (None, 0, None, None))(state, keys, x, 5)
  np.testing.assert_allclose(vals, [loss(state, k, x, 5) for k in keys], rtol=1e-5)


def test_learned_per_node_temperature():
  layer = gumbax.nnx.SubsetSelector(N, K, temperature=2.0, learn_temperature=True,
                                    temperature_shape=(K,), rngs=nnx.Rngs(0))
  assert layer.log_temperature.shape == (K,)
  graphdef, state, rest = nnx.split(layer, nnx.Param, ...)
  loss = lambda s: jnp.sum(nnx.merge(graphdef, s, rest)(_x(), deterministic=False,
                                                  rngs=jax.random.key(1)) ** 2)
  g = jax.grad(loss)(state)["log_temperature"][...]
  assert g.shape == (K,) and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
  with pytest.raises(ValueError, match="learns its temperature"):
    layer(_x(), deterministic=False, temperature=0.5)


@pytest.mark.parametrize("method,hard", [("concrete", False), ("top_k", False), ("top_k", True)])
def test_nnx_and_linen_give_identical_outputs_and_gradients(method, hard):
  x, key = _x(), jax.random.key(7)
  layer = _nnx(method, hard=hard)
  if method == "top_k":
    layer.logits[...] = jax.random.normal(jax.random.key(3), (N,))
  module = gumbax.linen.SubsetSelector(K, method=method, temperature=0.5, hard=hard)
  variables = module.init(jax.random.key(0), x, deterministic=True)
  assert variables["params"]["logits"].shape == layer.logits.shape
  variables = {"params": {"logits": layer.logits[...]}}
  for det in (False, True):
    np.testing.assert_array_equal(
        layer(x, deterministic=det, rngs=key),
        module.apply(variables, x, deterministic=det, rng=key))
  np.testing.assert_array_equal(layer.selected_indices(),
                                module.apply(variables, method="selected_indices"))
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
  g_nnx = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(
      x, deterministic=False, rngs=key) ** 2))(params)["logits"][...]
  g_linen = jax.grad(lambda l: jnp.sum(module.apply(
      {"params": {"logits": l}}, x, deterministic=False, rng=key) ** 2))(
          layer.logits[...])
  np.testing.assert_array_equal(g_nnx, g_linen)


def test_rng_and_deterministic_errors():
  layer = gumbax.nnx.SubsetSelector(N, K, rngs=nnx.Rngs(params=0))
  with pytest.raises(ValueError, match="No `deterministic` value"):
    layer(_x())
  with pytest.raises(ValueError, match="needs a random key from the 'gumbel' rng stream"):
    layer(_x(), deterministic=False)
  layer(_x(), deterministic=False, rngs=jax.random.key(0))   # a call-time key works
  layer(_x(), deterministic=True)                            # evaluation needs no key
  module = gumbax.linen.SubsetSelector(K)
  variables = module.init(jax.random.key(0), _x(), deterministic=True)
  with pytest.raises(ValueError, match="needs a random key from the 'gumbel' rng stream"):
    module.apply(variables, _x(), deterministic=False)


def test_bad_input():
  with pytest.raises(ValueError, match="`num_selected`=8 must be at most `num_features`=7"):
    gumbax.nnx.SubsetSelector(N, 8, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="`method` must be one of"):
    gumbax.nnx.SubsetSelector(N, K, method="topk", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="`method` must be one of"):
    gumbax.linen.SubsetSelector(K, method="gumbel")
  with pytest.raises(TypeError, match="`num_selected`"):
    gumbax.nnx.SubsetSelector(N, 2.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="`num_selected`"):
    gumbax.linen.SubsetSelector(0)
  with pytest.raises(ValueError, match="`temperature` must be > 0"):
    gumbax.nnx.SubsetSelector(N, K, temperature=0.0, rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match="nnx.Rngs"):
    gumbax.nnx.SubsetSelector(N, K, rngs=None)
  layer = gumbax.nnx.SubsetSelector(N, K, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"batch \+ \(7,\); got shape \(4, 6\)"):
    layer(jnp.zeros((4, 6)), deterministic=True)
  module = gumbax.linen.SubsetSelector(K)
  with pytest.raises(ValueError, match="`num_selected`=3 must be at most `num_features`=2"):
    module.init(jax.random.key(0), jnp.zeros((4, 2)), deterministic=True)
  variables = module.init(jax.random.key(0), _x(), deterministic=True)
  with pytest.raises(ValueError, match=r"batch \+ \(7,\); got shape \(4, 6\)"):
    module.apply(variables, jnp.zeros((4, 6)), deterministic=True)
