"""Exact enumeration: the ground truth for problems small enough to enumerate."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from gumbax import _checks
from gumbax._checks import check_int
from gumbax.estimators._base import Estimator, register

__all__ = ["Exact"]


@register
@dataclasses.dataclass(frozen=True)
class Exact(Estimator):
  """Exact expectation and gradient by enumerating every configuration.

  Unbiased and with zero variance: the ground truth. The surrogate is ``sum_b p(b) f(b)`` over all ``K^N`` configurations of each
  example's ``N`` latents (``2^N`` for Bernoulli), so its value is the expectation
  and its gradient the exact gradient, for the logits and for what ``f`` closes
  over. ``f`` is evaluated once per configuration (vmapped); it must treat examples
  independently. Refuses, with ``ValueError``, problems with more than
  ``max_configurations`` configurations. Categorical and Bernoulli.

  Attributes:
    max_configurations: the largest ``K^N`` accepted.

  References:
    The definition of the expectation; used as ground truth in gradient-estimator
    studies such as Tucker et al., REBAR, 2017 (arXiv 1703.07370).
  """

  name = "exact"
  uses_temperature = False
  unbiased = True
  evaluations = "K^N (every configuration)"
  reference = "enumeration (ground truth)"
  max_configurations: int = 2 ** 16

  def __post_init__(self):
    super().__post_init__()
    check_int(self.max_configurations, "max_configurations", 1)

  def configurations(self, logits, ndim: int) -> jax.Array:
    """All configurations, shape ``(C,) + logits.shape`` (broadcast over the batch)."""
    event = logits.shape[ndim:-1] if self.categorical else logits.shape[ndim:]
    k = logits.shape[-1] if self.categorical else 2
    n = math.prod(event)
    count = float(k) ** n
    if count > self.max_configurations:
      raise ValueError(
          f"`exact` would enumerate {k}^{n} = {count:.3g} configurations per example "
          f"(event shape {tuple(event)}, {k} values each), more than "
          f"max_configurations={self.max_configurations}. Use a sampling estimator or "
          "raise max_configurations.")
    digits = np.stack(np.unravel_index(np.arange(int(count)), (k,) * n), axis=-1)  # (C, n)
    digits = digits.reshape((int(count),) + tuple(event))
    cdtype = _checks.compute_dtype(logits.dtype)
    if self.categorical:
      configs = jax.nn.one_hot(jnp.asarray(digits), k, dtype=cdtype)
      expand = (slice(None),) + (None,) * ndim
      return jnp.broadcast_to(configs[expand], (configs.shape[0],) + logits.shape)
    configs = jnp.asarray(digits, cdtype)
    expand = (slice(None),) + (None,) * ndim
    return jnp.broadcast_to(configs[expand], (configs.shape[0],) + logits.shape)

  def surrogate(self, key, logits, f, cv):
    del key, cv
    ndim = self.out_ndim(f, jnp.zeros(logits.shape, logits.dtype))
    configs = self.configurations(logits, ndim)
    values = jax.vmap(f)(configs.astype(logits.dtype))
    logp = jax.vmap(lambda b: self.log_prob(b, logits, ndim))(configs)
    return jnp.sum(jnp.exp(logp) * values, axis=0)
