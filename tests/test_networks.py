"""Tests for ``gumbax.networks``: initializers, dense layers and MLPs as pytrees."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gumbax import networks
from tests._tolerance import assert_f32_close

KEY = jax.random.key(0)


def test_lecun_normal_is_jax_initializer_bit_for_bit():
  for shape in ((7, 5), (784, 32)):
    want = jax.nn.initializers.lecun_normal()(KEY, shape, jnp.float32)
    np.testing.assert_array_equal(jax.jit(networks.lecun_normal, static_argnums=1)(KEY, shape),
                                  want)


@pytest.mark.parametrize("init,bound", [(networks.lecun_normal, 2.0),
                                        (networks.lecun_normal_untruncated, None)])
def test_initializers_have_variance_one_over_fan_in(init, bound):
  fan_in, n = 50, 200_000
  w = np.asarray(init(KEY, (fan_in, n // fan_in)), np.float64) * np.sqrt(fan_in)
  # The sample variance of n unit-variance draws has standard error sqrt(2 / n)
  # (about 0.003 here); 6 standard errors.
  assert abs(w.var() - 1.0) < 6 * np.sqrt(2 / n)
  assert abs(w.mean()) < 6 / np.sqrt(n)
  if bound is not None:
    assert np.abs(w).max() <= bound * 1.0 / 0.87962566103423978 + 1e-5


def test_mlp_init_shapes_keys_and_scalar_output():
  layers = networks.mlp_init(KEY, [6, 4, 3])
  assert [l["w"].shape for l in layers] == [(6, 4), (4, 3)]
  assert all(not np.any(l["b"]) for l in layers)
  keys = jax.random.split(KEY, 2)
  np.testing.assert_array_equal(layers[1]["w"], networks.lecun_normal(keys[1], (4, 3)))
  head = networks.mlp_init(KEY, [6, 4, None])
  assert head[1]["w"].shape == (4,) and head[1]["b"].shape == ()
  zero = networks.dense_init(None, 4, None, weight_init=jax.nn.initializers.zeros)
  assert zero["w"].shape == (4,) and not np.any(zero["w"])


def numpy_mlp(layers, x, activation):
  h = np.asarray(x, np.float64)
  for i, l in enumerate(layers):
    h = h @ np.asarray(l["w"], np.float64) + np.asarray(l["b"], np.float64)
    if i < len(layers) - 1:
      h = activation(h)
  return h


@pytest.mark.parametrize("sizes", [[5, 8, 3], [5, 8, None]])
def test_mlp_apply_matches_numpy_under_jit_and_vmap(sizes):
  layers = networks.mlp_init(KEY, sizes)
  layers = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(1), a.shape), layers)
  x = jax.random.normal(jax.random.key(2), (4, 2, 5))
  want = numpy_mlp(layers, x, np.tanh)
  # Each output sums 8 products of magnitude |h| |w| (plus the bias): rounding ~eps32 * that.
  scale = np.abs(numpy_mlp([{k: np.abs(v) for k, v in l.items()} for l in layers],
                           np.abs(x), lambda h: np.ones_like(h))).max()
  apply = jax.jit(lambda p, x: networks.mlp_apply(p, x, activation=jnp.tanh))
  got = apply(layers, x)
  assert got.shape == want.shape
  assert_f32_close(got, want, scale, ulps=32, rtol=1e-5)
  mapped = jax.jit(jax.vmap(lambda x: networks.mlp_apply(layers, x, jnp.tanh)))(x)
  assert_f32_close(mapped, want, scale, ulps=32, rtol=1e-5)


@pytest.mark.parametrize("call,exc,words", [
    (lambda: networks.mlp_init(KEY, [3]), ValueError, ["sizes"]),
    (lambda: networks.mlp_init(KEY, [3, None, 2]), ValueError, ["None"]),
    (lambda: networks.mlp_init(KEY, [3, 2.5]), TypeError, ["fan_out", "2.5"]),
    (lambda: networks.dense_init(KEY, 0, 2), ValueError, ["fan_in", "0"]),
    (lambda: networks.lecun_normal(KEY, ()), ValueError, ["shape"]),
])
def test_bad_input(call, exc, words):
  with pytest.raises(exc) as info:
    call()
  for word in words:
    assert word in str(info.value), (word, str(info.value))
