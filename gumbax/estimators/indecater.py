"""IndeCateR: the CatLog-Derivative trick for independent categorical variables.

For ``D`` independent categorical variables ``x_1..x_D`` with ``K`` values each,
``grad E[f(X)] = sum_d E_X[sum_k grad p_d(k) f(X with x_d replaced by k)]``: the
expectation over each variable is taken exactly, given a sample of the others.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from gumbax import _checks
from gumbax._checks import check_int
from gumbax.estimators._base import Estimator, detach, register, zero_valued

__all__ = ["IndeCateR"]

PATHWISE = ("rao_blackwell", "samples")


@register
@dataclasses.dataclass(frozen=True)
class IndeCateR(Estimator):
  """IndeCateR: each variable's expectation summed exactly, the others sampled.

  With ``N = num_samples`` exact samples ``x^n``, ``D`` latents per example (the
  event size: every axis of the logits after those of ``f``'s output, the category
  axis excepted) and ``K`` values each (``K = 2`` for Bernoulli), the estimate for
  the logits is

  ``g = 1/N sum_n sum_d sum_k grad p_d(k) f(x^n with x_d <- k)``,

  the Monte Carlo form of the CatLog-Derivative trick. Unbiased. No baseline is
  needed: ``sum_k grad p_d(k) = 0``, so subtracting any constant from ``f`` leaves
  ``g`` unchanged (the authors' code uses none either). With one latent (``D = 1``)
  the modified samples are all ``K`` configurations and ``g`` is the exact gradient.

  The parameters ``f`` closes over (a decoder) get, with ``pathwise="rao_blackwell"``
  (the default), the Rao-Blackwellized pathwise gradient
  ``1/(N D) sum_n sum_d sum_k p_d(k) grad f(x^n with x_d <- k)``: for each ``d`` the
  sum over ``k`` is ``E[grad f(X) | X_{-d} = x^n_{-d}]``, so it is unbiased, has no
  more variance than ``mean_n grad f(x^n)``, needs no further evaluations, and is
  exact when ``D = 1``; but the backward pass then runs through all ``N D K``
  evaluations. ``pathwise="samples"`` gives them ``mean_n grad f(x^n)`` (the authors'
  code does this): ``N`` more evaluations of ``f`` with a backward pass, while the
  ``N D K`` ones are cut from differentiation and need none (on a VAE-sized MLP
  decoder with 200 modified points, about 4x less time per gradient on a CPU). The
  logits' estimate is the same either way.

  The forward value is the loss at the samples, ``mean_n f(x^n)`` (with
  ``"rao_blackwell"`` read from the evaluations, since ``x^n`` with ``x_1 <- x^n_1``
  is ``x^n``). ``f`` is evaluated at ``num_samples * event_size * K`` points in one
  vmapped call; each carries the whole batch of examples with one latent changed in
  every example, so ``f`` must treat examples independently (as for ``exact``).
  Refuses, with ``ValueError``, more than ``max_evaluations`` of them. Categorical
  and Bernoulli.

  Attributes:
    num_samples: N >= 1 samples.
    pathwise: the gradient for what ``f`` closes over: ``"rao_blackwell"`` or
      ``"samples"`` (see above).
    max_evaluations: the largest ``num_samples * event_size * K`` accepted (the
      modified samples are materialized, ``N D K`` copies of the sample).

  Example:
    >>> key = jax.random.key(0)
    >>> logits = jnp.zeros((3, 4))                 # 3 latents, 4 values each
    >>> w = jnp.arange(12.0).reshape(3, 4)
    >>> f = lambda b: jnp.sum(b * w) ** 2 / 100    # a scalar loss
    >>> est = gumbax.estimators.get("indecater", num_samples=2)
    >>> est.evaluations                            # here 2 * 3 * 4 = 24 points
    "num_samples * event_size * K (+ num_samples with pathwise='samples')"
    >>> jax.grad(lambda l: est(key, l, f))(logits).shape
    (3, 4)
    >>> one = jnp.array([[0.5, -0.2, 0.0, 1.0]])   # one latent: exact enumeration
    >>> f1 = lambda b: jnp.sum(b * w[:1]) ** 2 / 100
    >>> g = jax.grad(lambda l: est(key, l, f1))(one)
    >>> exact = jax.grad(lambda l: gumbax.estimators.get("exact")(key, l, f1))(one)
    >>> bool(jnp.allclose(g, exact, rtol=1e-5, atol=1e-5))
    True

  References:
    De Smet, Sansone, Zuidberg Dos Martires, Differentiable Sampling of Categorical
    Distributions Using the CatLog-Derivative Trick, 2023 (arXiv 2311.12569).
  """

  name = "indecater"
  uses_temperature = False
  unbiased = True
  evaluations = "num_samples * event_size * K (+ num_samples with pathwise='samples')"
  reference = "De Smet et al. 2023"
  num_samples: int = 1
  pathwise: str = "rao_blackwell"
  max_evaluations: int = 2 ** 16

  def __post_init__(self):
    super().__post_init__()
    check_int(self.num_samples, "num_samples", 1)
    if self.pathwise not in PATHWISE:
      raise ValueError(f"`pathwise` must be one of {list(PATHWISE)}; got {self.pathwise!r}.")
    check_int(self.max_evaluations, "max_evaluations", 1)

  def surrogate(self, key, logits, f, cv):
    del cv
    n = self.num_samples
    ndim = self.out_ndim(f, jax.ShapeDtypeStruct(logits.shape, logits.dtype))
    batch = logits.shape[:ndim]
    event = logits.shape[ndim:-1] if self.categorical else logits.shape[ndim:]
    k = logits.shape[-1] if self.categorical else 2
    d = math.prod(event)
    count = n * d * k
    if d == 0:
      raise ValueError(
          f"`indecater` needs at least one latent per example; got the event shape "
          f"{tuple(event)} (logits shape {tuple(logits.shape)}, f's output rank {ndim}).")
    if count > self.max_evaluations:
      raise ValueError(
          f"`indecater` would evaluate f at num_samples * event_size * K = {n} * {d} * {k} "
          f"= {count} points (event shape {tuple(event)}), more than "
          f"max_evaluations={self.max_evaluations}. Use fewer samples, another estimator "
          "or raise max_evaluations.")
    nb = len(batch)
    x = jax.vmap(lambda k: self.sample(k, logits))(jax.random.split(key, n))
    # Latents flattened to (D, K): one-hot rows, or the binary value with its complement.
    if self.categorical:
      flat = x.reshape((n,) + batch + (d, k))
    else:
      bits = x.reshape((n,) + batch + (d,))
      flat = jnp.stack([1 - bits, bits], axis=-1)
    # modified[n, j, v] = x^n with latent j set to value v, in every example.
    mask = jnp.eye(d, dtype=bool).reshape((1, d, 1) + (1,) * nb + (d, 1))
    value = jnp.eye(k, dtype=flat.dtype).reshape((1, 1, k) + (1,) * nb + (1, k))
    modified = jnp.where(mask, value, flat[:, None, None])   # (N, D, K) + batch + (D, K)
    if self.categorical:
      modified = modified.reshape((count,) + logits.shape)
    else:
      modified = modified[..., 1].reshape((count,) + logits.shape)
    sample = x.astype(logits.dtype)
    rao_blackwell = self.pathwise == "rao_blackwell"
    f_points = f if rao_blackwell else detach(f, sample[0])
    values = jax.vmap(f_points)(modified.astype(logits.dtype))  # (N D K,) + batch
    values = values.reshape((n, d, k) + batch)
    values = jnp.moveaxis(values, (1, 2), (-2, -1))             # (N,) + batch + (D, K)
    if self.categorical:
      probs = self.mean(logits).reshape(batch + (d, k))
    else:
      l = logits.reshape(batch + (d,)).astype(_checks.compute_dtype(logits.dtype))
      probs = jnp.stack([jax.nn.sigmoid(-l), jax.nn.sigmoid(l)], axis=-1)
    stopped = jax.lax.stop_gradient(values)
    # The CatLog-Derivative term for the logits (zero-valued).
    catlog = jnp.mean(jnp.sum(probs[None] * stopped, axis=(-2, -1)), axis=0)
    if not rao_blackwell:
      return jnp.mean(jax.vmap(f)(sample), axis=0) + zero_valued(catlog)
    # The loss at the samples: x^n with its first latent set to its own value, and
    # the Rao-Blackwellized pathwise term for what f closes over (zero-valued).
    own = flat[..., 0, :] > 0                                   # (N,) + batch + (K,)
    at_samples = jnp.mean(jnp.sum(jnp.where(own, stopped[..., 0, :], 0), axis=-1), axis=0)
    weights = jax.lax.stop_gradient(probs)[None] / d
    pathwise = jnp.mean(jnp.sum(weights * values, axis=(-2, -1)), axis=0)
    return at_samples + zero_valued(catlog + pathwise)
