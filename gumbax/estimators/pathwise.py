"""Pathwise (reparameterization and straight-through) estimators.

They differentiate through a relaxed sample and need ``f`` only at one point. All
are biased (the relaxed one because ``f`` sees a relaxed input, the
straight-through ones because the backward pass is not ``f``'s own) and have low
variance. Each one is also a plain sampling function (``gumbax.gumbel_softmax``,
``gumbax.straight_through``, ...) usable without ``f``.

Their temperature is a call argument, ``est(key, logits, f, cv, temperature=tau)`` and
``est.sample_with_gradient(key, logits, tau)``, defaulting to the ``temperature``
field; a schedule's value reaches them that way each step.
"""

from __future__ import annotations

import abc
import dataclasses

import jax
import jax.numpy as jnp

from gumbax import _checks
from gumbax._checks import check_int
from gumbax.estimators._base import Estimator, register
from gumbax.relaxed import check_st_backward, st_backward, st_combine

__all__ = ["GumbelRao", "Pathwise", "ReinMax", "Relaxed", "StraightThrough",
           "StraightThroughGumbel"]


class Pathwise(Estimator):
  """Base class of the pathwise estimators: ``f`` at a (straight-through) sample.

  A pathwise estimator defines :meth:`sample_with_gradient`, the sample ``f`` sees
  carrying the estimator's gradient, so it works without ``f``: that is what the
  Flax layers (``gumbax.nnx.CategoricalLatent``, ``gumbax.linen``) call, and they
  accept exactly the registered subclasses of this class
  (``gumbax.estimators.names(Pathwise)``). A subclass is a frozen dataclass with a
  ``temperature`` field and defines ``_sample_with_gradient(key, logits,
  temperature)``; register it with :func:`gumbax.estimators.register`.

  References:
    Kingma, Welling, Auto-Encoding Variational Bayes, 2014 (arXiv 1312.6114), the
    reparameterization; Jang, Gu, Poole, Categorical Reparameterization with
    Gumbel-Softmax, 2017 (arXiv 1611.01144).
  """

  uses_temperature = True

  def sample_with_gradient(self, key, logits, temperature=None) -> jax.Array:
    """The sample ``f`` sees, carrying this estimator's gradient, at ``temperature``
    (None: the ``temperature`` field)."""
    if temperature is None:
      temperature = self.temperature
    return self._sample_with_gradient(key, logits, temperature)

  @abc.abstractmethod
  def _sample_with_gradient(self, key, logits, temperature) -> jax.Array:
    """:meth:`sample_with_gradient` at a given temperature; what each one defines."""

  def surrogate(self, key, logits, f, cv, *, temperature):
    del cv
    sample = self.sample_with_gradient(key, logits, temperature).astype(logits.dtype)
    self.out_ndim(f, sample)
    return f(sample)


@register
@dataclasses.dataclass(frozen=True)
class Relaxed(Pathwise):
  """Gumbel-softmax / Concrete (relaxed Bernoulli): ``f`` at the relaxed sample.

  Biased (``f`` is evaluated off the discrete points, so ``f`` must accept relaxed
  inputs); low variance; 1 evaluation of ``f``. Categorical and Bernoulli.

  Attributes:
    temperature: positive temperature (a number or an array broadcasting against
      the logits without the category axis; pass a schedule's value per step).

  References:
    Jang, Gu, Poole, Categorical Reparameterization with Gumbel-Softmax, 2017
    (arXiv 1611.01144); Maddison, Mnih, Teh, The Concrete Distribution, 2017
    (arXiv 1611.00712).
  """

  name = "relaxed"
  reference = "Jang et al. 2017; Maddison et al. 2017"
  temperature: float = 1.0

  uses_temperature = True

  def _sample_with_gradient(self, key, logits, temperature):
    return self.relax(self.perturb(key, logits), temperature)


@register
@dataclasses.dataclass(frozen=True)
class StraightThrough(Pathwise):
  """Straight-through (Bengio et al.): exact sample forward, mean's gradient backward.

  The backward pass differentiates ``softmax(logits / temperature)`` (or
  ``sigmoid``). The sample is always drawn from ``softmax(logits)``: the
  temperature changes only the backward pass. Slope annealing as Chung et al.
  describe it sharpens the sampled distribution too: pass ``logits / tau`` at
  ``temperature=1`` (and use those logits in the model's other terms, e.g. a KL);
  the experiments' ``temperature.slope`` does that.
  ``backward="identity"`` differentiates ``logits / temperature`` instead: the
  sample's gradient reaches the logits unchanged (at ``temperature=1``), Bengio et
  al.'s "as if the hard threshold were the identity"; unlike the softmax's it does
  not vanish where the distribution is nearly deterministic, so nothing stops the
  logits growing (with an analytic KL term, ``q`` can collapse to one-hot).
  Biased; 1 evaluation of ``f``. Categorical and Bernoulli.

  Attributes:
    temperature: slope of the backward softmax / sigmoid (or identity).
    backward: ``"softmax"`` (default; ``sigmoid`` for Bernoulli) or ``"identity"``.

  References:
    Bengio, Leonard, Courville, Estimating or Propagating Gradients Through
    Stochastic Neurons for Conditional Computation, 2013 (arXiv 1308.3432);
    Chung, Ahn, Bengio, Hierarchical Multiscale Recurrent Neural Networks, 2016
    (arXiv 1609.01704), slope annealing.
  """

  name = "straight_through"
  reference = "Bengio et al. 2013"
  temperature: float = 1.0
  backward: str = "softmax"

  def __post_init__(self):
    super().__post_init__()
    check_st_backward(self.backward)

  uses_temperature = True

  def _sample_with_gradient(self, key, logits, temperature):
    l = logits.astype(_checks.compute_dtype(logits.dtype))
    axis = -1 if self.categorical else None
    return st_combine(self.sample(key, logits), st_backward(l, temperature, self.backward, axis))


@register
@dataclasses.dataclass(frozen=True)
class StraightThroughGumbel(Pathwise):
  """Straight-through Gumbel-softmax: exact sample forward, relaxed sample's gradient.

  Biased; 1 evaluation of ``f`` (at a discrete point). Categorical and Bernoulli.

  Attributes:
    temperature: temperature of the relaxed sample used in the backward pass.

  References:
    Jang, Gu, Poole, Categorical Reparameterization with Gumbel-Softmax, 2017
    (arXiv 1611.01144).
  """

  name = "straight_through_gumbel"
  reference = "Jang et al. 2017"
  temperature: float = 1.0

  uses_temperature = True

  def _sample_with_gradient(self, key, logits, temperature):
    z = self.perturb(key, logits)
    return st_combine(self.harden(z), self.relax(z, temperature))


@register
@dataclasses.dataclass(frozen=True)
class GumbelRao(Pathwise):
  """Gumbel-Rao: ST-Gumbel with its Jacobian averaged over conditional noise.

  The forward sample is ``b = H(logits + g)``; the backward pass averages the relaxed
  sample's Jacobian over ``num_samples`` perturbations drawn from ``p(z | b)``, the
  first being the ``g`` that drew ``b`` itself (so ``num_samples=1`` is exactly
  ST-Gumbel with the same key) and the others from
  :func:`gumbax.conditional_gumbel`. The noise is held constant (no gradient
  through the conditional sampler). Biased like ST-Gumbel, with no larger variance;
  1 evaluation of ``f``. Categorical and Bernoulli.

  Attributes:
    num_samples: number of conditional perturbations K (>= 1).
    temperature: temperature of the relaxed samples.

  References:
    Paulus, Maddison, Krause, Rao-Blackwellizing the Straight-Through Gumbel-Softmax
    Gradient Estimator, 2021 (arXiv 2010.04838).
  """

  name = "gumbel_rao"
  reference = "Paulus et al. 2021"
  num_samples: int = 10
  temperature: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    check_int(self.num_samples, "num_samples", 1)

  uses_temperature = True

  def _sample_with_gradient(self, key, logits, temperature):
    l = logits.astype(_checks.compute_dtype(logits.dtype))
    g = self.noise(key, logits)
    b = self.harden(l + g)
    noise = g[None]
    if self.num_samples > 1:
      keys = jax.random.split(jax.random.fold_in(key, 1), self.num_samples - 1)
      zc = jax.vmap(self.conditional, in_axes=(0, None, None))(
          keys, jax.lax.stop_gradient(logits), b)
      lc = jax.lax.stop_gradient(l)[None]
      extra = jnp.where(jnp.isneginf(lc), 0.0, zc - lc)
      noise = jnp.concatenate([noise, jax.lax.stop_gradient(extra)], axis=0)
    soft = jax.vmap(lambda n: self.relax(l + n, temperature))(noise)
    return st_combine(b, jnp.mean(soft, axis=0))


@register
@dataclasses.dataclass(frozen=True)
class ReinMax(Pathwise):
  """ReinMax: straight-through with second-order (Heun's method) accuracy.

  Forward: an exact sample ``D``. Backward: ``2 J(pi_1)^T g - J(pi_0)^T g / 2``
  where ``J(p) = diag(p) - p p^T``, ``pi_0 = softmax(logits)`` and
  ``pi_1 = (D + softmax(logits / temperature)) / 2``. Bernoulli variables use the
  two-category form with logits ``(0, logit)``. Biased; 1 evaluation of ``f``.

  Attributes:
    temperature: temperature of the softmax inside ``pi_1``. Liu et al. recommend
      ``temperature >= 1`` (the reverse of Gumbel-softmax).

  References:
    Liu et al., Bridging Discrete and Backpropagation: Straight-Through and Beyond,
    2023 (arXiv 2304.08612).
  """

  name = "reinmax"
  reference = "Liu et al. 2023"
  temperature: float = 1.0

  uses_temperature = True

  def _sample_with_gradient(self, key, logits, temperature):
    if not self.categorical:
      pair = jnp.stack([jnp.zeros_like(logits), logits], axis=-1)
      cat = dataclasses.replace(self, distribution="categorical")
      return cat.sample_with_gradient(key, pair, temperature)[..., 1]
    l = logits.astype(_checks.compute_dtype(logits.dtype))
    d = self.sample(key, l)
    pi0 = jax.lax.stop_gradient(self.relax(l, 1.0))
    pi1 = jax.lax.stop_gradient(0.5 * (d + self.relax(l, temperature)))
    safe = jnp.where(jnp.isneginf(l), 0.0, l)
    delta = safe - jax.lax.stop_gradient(safe)           # zero forward, identity backward

    def jvp_softmax(p):  # (diag(p) - p p^T) delta, zero in the forward pass
      return p * (delta - jnp.sum(p * delta, axis=-1, keepdims=True))

    return d + (2.0 * jvp_softmax(pi1) - 0.5 * jvp_softmax(pi0))
