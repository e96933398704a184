"""REBAR and RELAX: score-function estimators with reparameterized control variates.

With ``z ~ p(z | theta)``, ``b = H(z)`` and ``z~ ~ p(z | b, theta)``:
``g = (f(b) - c(z~)) grad log p(b) + grad c(z) - grad c(z~)``, unbiased for any
control variate ``c``. Its parameters (``cv["params"]``) are trained online by
minimizing the estimator's variance with :meth:`Estimator.variance_loss`.

Their temperature ``lambda`` is a learned control-variate parameter
(``cv["params"]["log_temperature"]``) that starts at the ``lambda_init`` field; it is
not a sampling temperature (``uses_temperature`` is False, and a call-time
``temperature=`` is refused). The old keyword ``temperature=`` for ``lambda_init``
still works, with a ``DeprecationWarning``, until the next release.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from gumbax.estimators import _network
from gumbax._checks import check_int
from gumbax.estimators._base import Estimator, detach, register, score_term, zero_valued

__all__ = ["Rebar", "Relax"]


def _caller_level() -> int:
  """The ``stacklevel`` of the first frame outside the estimators' package and the
  dataclass-generated ``__init__`` (the user's call of the constructor or of ``get``)."""
  here = os.path.dirname(os.path.abspath(__file__))
  frame, level = sys._getframe(1), 1
  while frame is not None and (
      os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here
      or frame.f_code.co_name == "__init__" and "self" in frame.f_locals
      and isinstance(frame.f_locals["self"], Estimator)):
    frame, level = frame.f_back, level + 1
  return level


class _RelaxFamily(Estimator):
  unbiased = True
  needs_cv = True
  deprecated_names = {"temperature": "lambda_init"}

  def __post_init__(self, temperature=None):
    if temperature is not None:
      if self.lambda_init != type(self).lambda_init:
        raise TypeError(
            f"Estimator {self.name!r}: pass the initial temperature lambda as `lambda_init` "
            "only (`temperature` is its deprecated old name); got both.")
      warnings.warn(
          f"The `temperature` argument of estimator {self.name!r} is deprecated and will "
          "be removed in the next release; it is the initial control-variate temperature "
          "lambda, now named `lambda_init` (the sampling temperature of the pathwise "
          "estimators is a different thing).", DeprecationWarning, stacklevel=_caller_level())
      object.__setattr__(self, "lambda_init", temperature)
    super().__post_init__()

  def control(self, params, z, f_detached, ndim, logits_dtype):
    """``c(z)``: per-example control variate (``eta f(sigma_lambda(z))`` by default)."""
    tau = jnp.exp(params["log_temperature"])
    relaxed = self.relax(z, tau).astype(logits_dtype)
    return params["eta"] * f_detached(relaxed)

  def init(self, key, logits):
    del key
    logits = self._check_logits(logits)
    params = {"eta": jnp.asarray(self.eta, jnp.float32),
              "log_temperature": jnp.log(jnp.asarray(self.lambda_init, jnp.float32))}
    return {"params": params, "state": {}}

  def surrogate(self, key, logits, f, cv):
    params = cv["params"]
    k_z, k_cond = jax.random.split(key)
    z = self.perturb(k_z, logits)
    b = self.harden(z)
    sample = b.astype(logits.dtype)
    ndim = self.out_ndim(f, sample)
    fb = f(sample)
    logp = self.log_prob(b, logits, ndim)
    z_tilde = self.conditional(k_cond, logits, b)
    f_det = detach(f, sample)
    c = lambda x: self.control(params, x, f_det, ndim, logits.dtype)
    # The score term's coefficient is constant in the logits but not in the control
    # variate's parameters, so the variance objective can differentiate through it.
    signal = jax.lax.stop_gradient(fb) - c(jax.lax.stop_gradient(z_tilde))
    return fb + score_term(signal, logp) + zero_valued(c(z)) - zero_valued(c(z_tilde))


@register
@dataclasses.dataclass(frozen=True)
class Rebar(_RelaxFamily):
  """REBAR: the relaxed ``f`` as control variate, ``c(z) = eta f(sigma_lambda(z))``.

  ``sigma_lambda`` is the Gumbel-softmax (or sigmoid) at temperature ``lambda``;
  ``eta`` and ``log lambda`` live in ``cv["params"]`` and are trained by the
  variance objective. ``f`` must accept relaxed inputs. Unbiased for any ``eta``,
  ``lambda``; 3 evaluations of ``f`` (at ``b``, ``sigma(z)``, ``sigma(z~)``).
  Categorical and Bernoulli.

  Attributes:
    eta: initial scale of the control variate.
    lambda_init: initial temperature ``lambda`` (learned; its old name
      ``temperature`` is deprecated).

  References:
    Tucker, Mnih, Maddison, Lawson, Sohl-Dickstein, REBAR: Low-variance, unbiased
    gradient estimates for discrete latent variable models, 2017 (arXiv 1703.07370).
  """

  name = "rebar"
  evaluations = "3"
  reference = "Tucker et al. 2017"
  uses_temperature = False
  eta: float = 1.0
  lambda_init: float = 0.5
  temperature: dataclasses.InitVar[Optional[float]] = None  # deprecated: lambda_init


@register
@dataclasses.dataclass(frozen=True)
class Relax(_RelaxFamily):
  """RELAX: a learned control variate ``c_phi(z)``.

  By default the paper's ``c(z) = eta f(sigma_lambda(z)) + r_rho(z)`` with
  ``r_rho`` a per-latent MLP of ``sigma_1(z)`` summed over latents (output layer
  starting at zero). A custom network replaces it: ``network_init(key, logits) ->
  params`` and ``network_apply(params, z) -> per-example values``, where ``z`` has
  the logits' shape (perturbed logits). All parameters live in ``cv["params"]`` and
  are trained by the variance objective. Unbiased for any parameters; 3
  evaluations of ``f`` with the default network (1 with a custom one).
  Categorical and Bernoulli.

  Attributes:
    eta: initial scale of the relaxed-``f`` term.
    lambda_init: initial temperature ``lambda`` (learned; its old name
      ``temperature`` is deprecated).
    hidden: width of ``r_rho``.
    network_init: optional custom control-variate initializer.
    network_apply: optional custom control variate.

  References:
    Grathwohl, Choi, Wu, Roeder, Duvenaud, Backpropagation through the Void:
    Optimizing control variates for black-box gradient estimation, 2018
    (arXiv 1711.00123).
  """

  name = "relax"
  evaluations = "3 (1 with a custom network)"
  reference = "Grathwohl et al. 2018"
  uses_temperature = False
  eta: float = 1.0
  lambda_init: float = 0.5
  hidden: int = 16
  network_init: Optional[Callable] = None
  network_apply: Optional[Callable] = None
  temperature: dataclasses.InitVar[Optional[float]] = None  # deprecated: lambda_init

  def __post_init__(self, temperature=None):
    super().__post_init__(temperature)
    check_int(self.hidden, "hidden", 1)
    if (self.network_init is None) != (self.network_apply is None):
      raise ValueError("Pass both `network_init` and `network_apply`, or neither.")

  def init(self, key, logits):
    k_net, k_default = jax.random.split(key)
    logits = self._check_logits(logits)
    if self.network_apply is not None:
      return {"params": {"network": self.network_init(k_net, logits)}, "state": {}}
    cv = super().init(k_default, logits)
    in_dim = logits.shape[-1] if self.categorical else 1
    cv["params"]["network"] = _network.init(k_net, in_dim, self.hidden)
    return cv

  def control(self, params, z, f_detached, ndim, logits_dtype):
    if self.network_apply is not None:
      return self.network_apply(params["network"], z)
    residual = _network.apply(params["network"], self.relax(z, 1.0), ndim, self.categorical)
    return super().control(params, z, f_detached, ndim, logits_dtype) + residual

