"""The flat draw gives exactly the numbers of a draw of the full shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gumbax import _noise

SHAPES = [(), (7,), (3, 5), (2, 3, 4), (2, 1, 3, 5), (0, 4)]


@pytest.mark.parametrize("partitionable", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_flat_draw_is_the_full_draw(shape, partitionable):
  with jax.threefry_partitionable(partitionable):
    for sampler, kwargs in [(jax.random.gumbel, {"mode": "low"}), (jax.random.logistic, {}),
                            (jax.random.uniform, {"minval": 1e-30, "maxval": 1.0})]:
      for seed in range(3):
        key = jax.random.key(seed)
        want = sampler(key, shape, jnp.float32, **kwargs)
        got = _noise.draw(sampler, key, shape, jnp.float32, **kwargs)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)  # the same bits: exact by construction


def test_flat_draw_under_jit_and_vmap():
  keys = jax.random.split(jax.random.key(0), 4)
  shape = (3, 2, 5)
  want = jax.vmap(lambda k: jax.random.gumbel(k, shape))(keys)
  got = jax.jit(jax.vmap(lambda k: _noise.draw(jax.random.gumbel, k, shape)))(keys)
  np.testing.assert_array_equal(got, want)
