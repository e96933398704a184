"""Score-function estimators: REINFORCE with baselines, leave-one-out, MuProp.

All are unbiased: ``E[(f(b) - c) grad log p(b)] = grad E[f(b)]`` for any ``c``
that does not depend on ``b``. The parameters ``f`` closes over get the pathwise
gradient ``grad f(b)`` averaged over the samples.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from gumbax.estimators import _network
from gumbax._checks import check_int
from gumbax.estimators._base import Estimator, MeanFieldLoss, register, score_term, zero_valued

__all__ = ["MuProp", "Reinforce", "ReinforceLeaveOneOut"]

BASELINES = ("none", "ema", "nvil")
MUPROP_BASELINES = ("none", "nvil")


NETWORKS = ("per_latent", "joint")


def _check_baseline(baseline, valid, hidden, network):
  if baseline not in valid:
    raise ValueError(f"`baseline` must be one of {list(valid)}; got {baseline!r}.")
  check_int(hidden, "hidden", 1)
  if network not in NETWORKS:
    raise ValueError(f"`network` must be one of {list(NETWORKS)}; got {network!r}.")


def _init_network(est, key, logits) -> dict:
  if est.network == "joint":
    in_dim = max(1, math.prod(logits.shape[1:]))
  else:
    in_dim = logits.shape[-1] if est.categorical else 1
  return _network.init(key, in_dim, est.hidden)


def _input_baseline(est, params, logits, ndim):
  """NVIL's input-dependent baseline ``r_psi`` of the stop-gradient probabilities."""
  probs = jax.lax.stop_gradient(est.mean(logits))
  if est.network == "joint":
    return _network.apply_joint(params["network"], probs, ndim)
  return _network.apply(params["network"], probs, ndim, est.categorical)


class _MultiSample(Estimator):
  """Draws ``num_samples`` exact samples and evaluates ``f`` once per sample (vmapped)."""

  def _draw(self, key, logits, f, num):
    b = jax.vmap(lambda k: self.sample(k, logits))(jax.random.split(key, num))
    b = b.astype(logits.dtype)
    ndim = self.out_ndim(f, b[0])
    fb = jax.vmap(f)(b)
    logp = jax.vmap(lambda s: self.log_prob(s, logits, ndim))(b)
    return fb, logp, ndim


@register
@dataclasses.dataclass(frozen=True)
class Reinforce(_MultiSample):
  """REINFORCE (score function) with an optional baseline.

  ``g = mean_i (f(b_i) - baseline) grad log p(b_i)`` over ``num_samples`` samples.
  Baselines: ``"none"``; ``"ema"``, an exponential moving average of the loss kept
  in ``cv["state"]`` and advanced by :meth:`update`; ``"nvil"``, NVIL's
  input-dependent baseline ``c + r_psi(logits)`` (``r_psi`` a per-latent MLP of the
  stop-gradient probabilities, summed over latents, or with ``network="joint"`` one
  MLP of all of an example's probabilities; trained by the variance objective).
  Unbiased; ``num_samples`` evaluations of ``f``. Categorical and Bernoulli.

  Mnih & Gregor also divide the learning signal by ``max(1, sqrt(running
  variance))``; that is ``normalize=True``, off by default. It rescales only this
  estimator's score term (unbiased up to that positive, per-step scale, 1 at
  initialization). When the loss has a part whose gradient is added outside the
  estimator (a VAE's analytic KL), that part is then weighted ``sqrt(variance)``
  times more than the reconstruction's signal: on an MNIST VAE (signal std of tens
  of nats) this drives the encoder to the prior (KL near 0). Adam already rescales
  each parameter's gradient, so the default leaves the signal as it is.

  Attributes:
    num_samples: samples per call (>= 1), evaluated in one vmapped call of ``f``.
    baseline: ``"none"``, ``"ema"`` or ``"nvil"``.
    decay: moving-average decay for the ``"ema"`` and ``"nvil"`` statistics.
    hidden: width of NVIL's baseline network.
    network: NVIL's baseline network: ``"per_latent"`` (default; one MLP shared by
      the latents, summed: it cannot tell which latent took which value) or
      ``"joint"`` (one MLP of the flattened probabilities of all latents, closer
      to Mnih & Gregor's MLP of the input; ``init`` must get logits with one
      leading batch axis).
    normalize: NVIL only: divide the learning signal by
      ``max(1, sqrt(running variance))`` (Mnih & Gregor's variance normalization;
      off by default, see above).

  References:
    Williams, Simple Statistical Gradient-Following Algorithms for Connectionist
    Reinforcement Learning, 1992; Mnih, Gregor, Neural Variational Inference and
    Learning in Belief Networks, 2014 (arXiv 1402.0030).
  """

  name = "reinforce"
  uses_temperature = False
  unbiased = True
  evaluations = "num_samples"
  reference = "Williams 1992; Mnih & Gregor 2014 (NVIL)"
  num_samples: int = 1
  baseline: str = "none"
  decay: float = 0.99
  hidden: int = 32
  network: str = "per_latent"
  normalize: bool = False

  def __post_init__(self):
    super().__post_init__()
    check_int(self.num_samples, "num_samples", 1)
    if not isinstance(self.normalize, bool):
      raise TypeError(f"`normalize` must be a bool; got {self.normalize!r}.")
    _check_baseline(self.baseline, BASELINES, self.hidden, self.network)
    if not 0.0 <= self.decay < 1.0:
      raise ValueError(f"`decay` must be in [0, 1); got {self.decay!r}.")

  @property
  def needs_cv(self):
    return self.baseline != "none"

  def init(self, key, logits):
    logits = self._check_logits(logits)
    if self.baseline == "none":
      return {}
    state = {"mean": jnp.zeros((), jnp.float32)}
    if self.baseline == "ema":
      return {"params": {}, "state": state}
    network = _init_network(self, key, logits)
    return {"params": {"network": network}, "state": {**state, "var": jnp.ones((), jnp.float32)}}

  def surrogate(self, key, logits, f, cv):
    fb, logp, ndim = self._draw(key, logits, f, self.num_samples)
    signal = jax.lax.stop_gradient(fb)
    if self.baseline != "none":
      signal = signal - cv["state"]["mean"]
    if self.baseline == "nvil":
      signal = signal - _input_baseline(self, cv["params"], logits, ndim)[None]
      if self.normalize:
        signal = signal / jnp.maximum(1.0, jnp.sqrt(cv["state"]["var"]))
    return jnp.mean(fb + score_term(signal, logp), axis=0)

  def update(self, cv, logits, loss):
    if self.baseline == "none":
      return cv
    d = self.decay
    loss = jax.lax.stop_gradient(loss)
    if self.baseline == "nvil":
      loss = loss - _input_baseline(self, cv["params"], logits, loss.ndim)
    state = dict(cv["state"])
    state["mean"] = d * state["mean"] + (1 - d) * jnp.mean(loss)
    if self.baseline == "nvil":
      state["var"] = d * state["var"] + (1 - d) * jnp.mean(jnp.square(loss - state["mean"]))
    return {**cv, "state": state}


@register
@dataclasses.dataclass(frozen=True)
class ReinforceLeaveOneOut(_MultiSample):
  """REINFORCE leave-one-out (RLOO): each sample's baseline is the others' mean.

  ``g = 1/(k-1) sum_i (f(b_i) - mean_j f(b_j)) grad log p(b_i)`` with ``k =
  num_samples`` independent samples. Unbiased; ``k`` evaluations of ``f``.
  Categorical and Bernoulli.

  Attributes:
    num_samples: k >= 2.

  References:
    Kool, van Hoof, Welling, Buy 4 REINFORCE Samples, Get a Baseline for Free!,
    2019 (ICLR workshop DeepRLStructPred).
  """

  name = "rloo"
  uses_temperature = False
  unbiased = True
  evaluations = "num_samples"
  reference = "Kool et al. 2019"
  num_samples: int = 2

  def __post_init__(self):
    super().__post_init__()
    check_int(self.num_samples, "num_samples", 2)

  def surrogate(self, key, logits, f, cv):
    del cv
    k = self.num_samples
    fb, logp, _ = self._draw(key, logits, f, k)
    fc = jax.lax.stop_gradient(fb)
    others = (jnp.sum(fc, axis=0, keepdims=True) - fc) / (k - 1)
    return jnp.mean(fb + score_term(fc - others, logp), axis=0)


@register
@dataclasses.dataclass(frozen=True)
class MuProp(Estimator):
  """MuProp: REINFORCE with a first-order Taylor control variate at the mean.

  With ``mu = E[b]`` (``softmax`` / ``sigmoid`` of the logits) and
  ``fbar(b) = f(mu) + f'(mu)^T (b - mu)``:
  ``g = (f(b) - fbar(b) - r) grad log p(b) + f'(mu)^T grad mu``. ``f`` must accept
  relaxed inputs (it is evaluated at ``mu``), and each example's output must depend
  on that example's sample only (``f'(mu)`` is taken per example by one VJP).
  Unbiased; 2 evaluations of ``f`` (at ``b`` and at ``mu``) and one VJP.
  Categorical and Bernoulli.

  When ``f`` is a :class:`~gumbax.estimators.MeanFieldLoss` (and ``mean_field`` is
  true), the expansion uses its deterministic ``mean_field`` in place of ``f``:
  ``fbar(b) = m(mu) + m'(mu)^T (b - mu)``, the paper's mean-field network. A
  stochastic ``f`` (one that samples further layers) otherwise gives a noisy slope.

  ``r`` is 0 with ``baseline="none"``. With ``baseline="nvil"`` it is NVIL's
  input-dependent baseline on top of the Taylor term: ``r_psi(logits)``, a per-latent
  MLP of the stop-gradient probabilities summed over latents (its output bias
  learns a constant; ``network="joint"``: one MLP of all latents' probabilities),
  trained by the variance objective
  (:meth:`~gumbax.estimators.Estimator.variance_loss`). It centers what the Taylor
  expansion leaves over: on a loss that is quadratic in ``b`` the residual
  ``f(b) - fbar(b)`` does not vanish, and a constant part of it is pure noise in
  ``g``. NVIL's variance normalization is not offered: the running statistics
  would need the residual, which :meth:`update` does not see.

  Attributes:
    baseline: ``"none"`` or ``"nvil"``.
    hidden: width of the baseline network (``"nvil"`` only).
    network: ``"per_latent"`` or ``"joint"``, as for :class:`Reinforce`.
    mean_field: expand around ``f.mean_field`` when ``f`` provides one.

  References:
    Gu, Levine, Sutskever, Mnih, MuProp: Unbiased Backpropagation for Stochastic
    Neural Networks, 2016 (arXiv 1511.05176); Mnih, Gregor, Neural Variational
    Inference and Learning in Belief Networks, 2014 (arXiv 1402.0030).
  """

  name = "muprop"
  uses_temperature = False
  unbiased = True
  evaluations = "2 (+1 VJP)"
  reference = "Gu et al. 2016"
  baseline: str = "none"
  hidden: int = 32
  network: str = "per_latent"
  mean_field: bool = True

  def __post_init__(self):
    super().__post_init__()
    _check_baseline(self.baseline, MUPROP_BASELINES, self.hidden, self.network)
    if not isinstance(self.mean_field, bool):
      raise TypeError(f"`mean_field` must be a bool; got {self.mean_field!r}.")

  @property
  def needs_cv(self):
    return self.baseline != "none"

  def init(self, key, logits):
    logits = self._check_logits(logits)
    if self.baseline == "none":
      return {}
    return {"params": {"network": _init_network(self, key, logits)}, "state": {}}

  def surrogate(self, key, logits, f, cv):
    b = self.sample(key, logits).astype(logits.dtype)
    ndim = self.out_ndim(f, b)
    fb = f(b)
    logp = self.log_prob(b, logits, ndim)
    mu = self.mean(logits)
    mu_c = jax.lax.stop_gradient(mu).astype(logits.dtype)
    expand = f.mean_field if self.mean_field and isinstance(f, MeanFieldLoss) else f
    # Only constants come out of f(mu): its value and slope enter stopped.
    f_mu, pullback = jax.vjp(expand, mu_c)
    slope = jax.lax.stop_gradient(pullback(jnp.ones_like(f_mu))[0]).astype(mu.dtype)
    reduce = lambda x: jnp.sum(x, axis=tuple(range(ndim, x.ndim)))
    taylor = f_mu + reduce(slope * (b - mu_c))
    signal = jax.lax.stop_gradient(fb - taylor)
    if self.baseline == "nvil":
      # Not stopped: the variance objective trains psi through this term.
      signal = signal - _input_baseline(self, cv["params"], logits, ndim)
    return fb + score_term(signal, logp) + zero_valued(reduce(slope * mu))
