"""A small per-latent MLP used by NVIL's baseline and RELAX's default control variate.

It maps each latent's relaxed value (a K-vector, or a scalar for Bernoulli) to a
number and sums over latents, so it needs no knowledge of the batch layout:
``r(z) = sum_n MLP(z_n)``. :func:`apply_joint` is the same MLP on all latents of
an example at once, ``r(z) = MLP(concat_n z_n)``, which can tell the latents
apart. Its output layer starts at zero. Built with :mod:`gumbax.networks`; the
parameters keep their names ``w1, b1, w2, b2`` (the ``cv`` users see).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gumbax import networks


def init(key, in_dim: int, hidden: int, dtype=jnp.float32) -> dict:
  """``{"w1", "b1", "w2", "b2"}``: the hidden layer's weights from
  :func:`gumbax.networks.lecun_normal_untruncated` (drawn with ``key`` itself), the
  output layer (one number) zero."""
  first = networks.dense_init(key, in_dim, hidden,
                              weight_init=networks.lecun_normal_untruncated, dtype=dtype)
  last = networks.dense_init(None, hidden, None, weight_init=jax.nn.initializers.zeros,
                             dtype=dtype)
  return {"w1": first["w"], "b1": first["b"], "w2": last["w"], "b2": last["b"]}


def _mlp(params: dict, features):
  """``tanh`` hidden layer then a linear output, over the last axis of ``features``."""
  layers = [{"w": params["w1"], "b": params["b1"]}, {"w": params["w2"], "b": params["b2"]}]
  return networks.mlp_apply(layers, features, activation=jnp.tanh)


def apply(params: dict, x, out_ndim: int, categorical: bool):
  """Per-example sum over latents of ``MLP(x_n)``; ``x`` is batch + event (+ (K,))."""
  per_latent = _mlp(params, x if categorical else x[..., None])
  return jnp.sum(per_latent, axis=tuple(range(out_ndim, per_latent.ndim)))


def apply_joint(params: dict, x, out_ndim: int):
  """Per-example ``MLP`` of all latents' values flattened: ``x`` is batch + the rest."""
  features = x.reshape(x.shape[:out_ndim] + (-1,))
  if features.shape[-1] != params["w1"].shape[0]:
    raise ValueError(
        f"The joint baseline network was built for {params['w1'].shape[0]} inputs per "
        f"example (the logits given to `init` without their leading batch axis); these "
        f"logits have {features.shape[-1]} per example (batch shape "
        f"{x.shape[:out_ndim]}). Call `init` with logits of one leading batch axis.")
  return _mlp(params, features)
