"""Estimators that sample without replacement: the unordered set estimator and
sum-and-sample (Rao-Blackwellization over the most probable configurations).

Both work in the sample space of one example: one categorical variable (a
Bernoulli one is two categories) or, for several, their joint configurations,
reached by (stochastic) beam search. Both evaluate ``f`` at distinct
configurations only, in one vmapped call, and are unbiased, for the logits and for
the parameters ``f`` closes over.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from gumbax import _checks
from gumbax._checks import check_int
from gumbax.estimators._base import Estimator, register, score_term
from gumbax.estimators._sets import beam_search, config_log_prob, exact_set_log_probs
from gumbax.estimators._sets import integrated_set_log_probs, log1mexp, row_keys, vmap_rows
from gumbax.gumbel import gumbel
from gumbax.gumbel import gumbel_top_k

__all__ = ["SumAndSample", "UnorderedSet"]

# The largest sample size for which the unordered-set probabilities are computed by
# the exact subset recursion (2^k terms per example).
MAX_EXACT = 16


class _WithoutReplacement(Estimator):
  """Shared: the sample space of one example is its ``N`` variables' joint
  configurations (``K^N``; Bernoulli: ``K = 2``)."""

  def _space(self, logits, f) -> jax.Array:
    """The logits as ``batch + (N, K)`` categorical logits (compute dtype,
    differentiable), with ``batch`` the shape of ``f``'s output."""
    ndim = self.out_ndim(f, jnp.zeros(logits.shape, logits.dtype))
    event = logits.shape[ndim:-1] if self.categorical else logits.shape[ndim:]
    shape = logits.shape[:ndim] + (math.prod(event),)
    l = logits.astype(_checks.compute_dtype(logits.dtype))
    if self.categorical:
      return l.reshape(shape + (logits.shape[-1],))
    l = l.reshape(shape)
    return jnp.stack([jnp.zeros_like(l), l], axis=-1)

  def _evaluate(self, f, configs, logits) -> jax.Array:
    """``f`` at the configurations ``configs`` (``batch + (n, N)``), one vmapped call;
    returns ``batch + (n,)`` (with ``f``'s gradient)."""
    configs = jnp.moveaxis(configs, -2, 0)
    n = configs.shape[0]
    if self.categorical:
      b = jax.nn.one_hot(configs, logits.shape[-1], dtype=logits.dtype)
    else:
      b = configs.astype(logits.dtype)
    fb = jax.vmap(f)(b.reshape((n,) + logits.shape))
    return jnp.moveaxis(fb, 0, -1)


def _count(num_classes, num_vars):
  return f"K={num_classes}" if num_vars == 1 else f"K^N={num_classes}^{num_vars}"


def _check_k(k, name, num_classes, num_vars):
  if k > float(num_classes) ** num_vars:
    raise ValueError(
        f"`{name}`={k} must not exceed the number of configurations per example; got "
        f"{_count(num_classes, num_vars)}.")


@register
@dataclasses.dataclass(frozen=True)
class UnorderedSet(_WithoutReplacement):
  """The unordered set estimator: ``k`` samples without replacement, with its baseline.

  Draws ``S``, ``k`` distinct categories (joint configurations, for several
  variables per example), by Gumbel-top-k and uses
  ``g = sum_{s in S} p(s) R(S, s) grad log p(s) (f(s) - B(S, s))`` with
  ``R(S, s) = p^{D-s}(S - s) / p(S)`` (so ``p(s) R(S, s)`` is the probability that
  ``s`` was drawn first given the unordered set) and the built-in baseline
  ``B(S, s) = sum_{s' in S} p(s') R^{D-s}(S, s') f(s')``, the unordered set
  estimate of ``E[f]`` from the other samples given ``s`` came first
  (``R^{D-s}(S, s') = p^{D-{s,s'}}(S - {s,s'}) / p^{D-s}(S - s)``, and 1 for
  ``s' = s``). ``p^{D-A}(T)`` is the probability of drawing the set ``T`` (in any
  order) without replacement from the configurations other than ``A``. With
  ``baseline=False``, ``B = 0``. The parameters ``f`` closes over get
  ``sum_s p(s) R(S, s) grad f(s)``.

  Unbiased; ``num_samples`` evaluations of ``f`` (distinct configurations, one
  vmapped call). The surrogate's forward value is ``sum_s p(s) R(S, s) f(s)``, the
  unordered set estimate of ``E[f]`` (unbiased; it is ``E[f]`` itself when ``S``
  is every configuration). Categorical and Bernoulli (one Bernoulli variable is
  two categories, so there ``k = 2`` and the estimate is exact).

  ``p(S)`` and the ratios are computed in log space: for ``k <= exact_max`` exactly
  (the sum over the ``k!`` orderings of their Plackett-Luce probabilities,
  organized as a recursion over the ``2^k`` subsets of ``S``), otherwise by
  numerical integration of ``p(S) = int_0^1 prod_{s in S} (1 - u^{p(s)/p(D-S)}) du``
  with ``num_points`` fixed quadrature nodes (on a logarithmic scale of
  ``t = -log(u) / p(D-S)``; accurate to float32 rounding for the default 128).

  Several variables per example (logits ``batch + (N, K)``, Bernoulli ``batch +
  (N,)``, with ``f`` returning ``batch``): ``S`` is drawn from their joint
  distribution over the ``K^N`` configurations by stochastic beam search (Kool et
  al. 2019; exactly Gumbel-top-k on the joint, with ``k`` beams per variable), and
  ``p(D - S) = 1 - sum_{s in S} p(s)`` in log space: when ``S`` holds all but about
  1e-6 of the mass, float32 rounds the ratios (the estimate is then almost the
  exact sum anyway). One variable (``N = 1``) uses Gumbel-top-k and the categories
  outside ``S`` directly.

  ``k`` must not exceed the number of configurations (``K``, or ``K^N``), nor the
  number of unmasked (finite-logit) ones of any example: concrete single-variable
  logits that break the latter are refused (as by :func:`gumbax.gumbel_top_k`);
  otherwise the results are undefined (non-finite).

  Attributes:
    num_samples: k, the sample size: >= 2 with the baseline, >= 1 without.
    baseline: use the built-in baseline (default True).
    exact_max: the largest ``k`` computed exactly (at most 16); larger ``k`` use
      numerical integration.
    num_points: quadrature nodes of the numerical integration (>= 16).

  Example:
    >>> est = gumbax.estimators.get("unordered_set", num_samples=3)
    >>> logits = jnp.log(jnp.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]))
    >>> f = lambda b: b @ jnp.array([1.0, 2.0, 3.0, 4.0])
    >>> est(jax.random.key(0), logits, f).shape
    (2,)
    >>> jax.grad(lambda l: est(jax.random.key(0), l, f).sum())(logits).shape
    (2, 4)

  References:
    Kool, van Hoof, Welling, Estimating Gradients for Discrete Random Variables by
    Sampling without Replacement, 2020 (arXiv 2002.06043); Kool, van Hoof, Welling,
    Stochastic Beams and Where to Find Them: The Gumbel-Top-k Trick for Sampling
    Sequences Without Replacement, 2019 (arXiv 1903.06059).
  """

  name = "unordered_set"
  uses_temperature = False
  unbiased = True
  evaluations = "num_samples"
  reference = "Kool et al. 2020"
  num_samples: int = 2
  baseline: bool = True
  exact_max: int = 6
  num_points: int = 128

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.baseline, bool):
      raise TypeError(f"`baseline` must be a bool; got {self.baseline!r}.")
    minimum = 2 if self.baseline else 1
    if check_int(self.num_samples, "num_samples", 1) < minimum:
      raise ValueError(
          f"`num_samples` must be an int >= 2 with the built-in baseline (it is built "
          f"from the other samples); got {self.num_samples!r}. Pass baseline=False "
          "for k = 1.")
    if check_int(self.exact_max, "exact_max", 1) > MAX_EXACT:
      raise ValueError(
          f"`exact_max` must be at most {MAX_EXACT} (the exact computation has 2^k "
          f"terms); got {self.exact_max!r}.")
    check_int(self.num_points, "num_points", 16)

  def surrogate(self, key, logits, f, cv):
    del cv
    lc = self._space(logits, f)                                       # batch + (N, K)
    k, batch, (num_vars, num_classes) = self.num_samples, lc.shape[:-2], lc.shape[-2:]
    _check_k(k, "num_samples", num_classes, num_vars)
    log_p = jax.nn.log_softmax(lc, axis=-1)
    stats = jax.lax.stop_gradient(log_p)
    if num_vars == 1:   # Gumbel-top-k; p(D - S) from the categories outside S
      configs = gumbel_top_k(key, lc[..., 0, :], k)[..., None]        # batch + (k, 1)
      in_s = jnp.sum(jax.nn.one_hot(configs[..., 0], num_classes, dtype=jnp.int32), -2) > 0
      log_rest = jax.nn.logsumexp(jnp.where(in_s, -jnp.inf, stats[..., 0, :]), axis=-1)
    else:               # stochastic beam search; p(D - S) = 1 - p(S's members)
      configs = vmap_rows(lambda l, r: beam_search(l, k, r), stats, row_keys(key, batch),
                      batch=batch)
    log_ps = config_log_prob(log_p, configs)                                # batch + (k,)
    lp = jax.lax.stop_gradient(log_ps)
    if num_vars > 1:
      log_rest = log1mexp(jax.nn.logsumexp(lp, axis=-1))
    fb = self._evaluate(f, configs, logits)                           # batch + (k,)
    exact = k <= self.exact_max
    probs = lambda a, r: (exact_set_log_probs(a, r) if exact
                          else integrated_set_log_probs(a, r, self.num_points))
    log_all, log_one, log_two = vmap_rows(probs, lp, log_rest, batch=batch)
    log_r1 = log_one - log_all[..., None]
    log_r2 = log_two - log_one[..., :, None]
    weight = jnp.exp(lp + log_r1)                    # P(s drawn first | S)
    fc = jax.lax.stop_gradient(fb).astype(weight.dtype)
    signal = fc
    if self.baseline:
      signal = fc - jnp.sum(jnp.exp(lp[..., None, :] + log_r2) * fc[..., None, :], axis=-1)
    value = jnp.sum(weight.astype(fb.dtype) * fb, axis=-1)
    return value + jnp.sum(score_term(weight * signal, log_ps), axis=-1).astype(fb.dtype)


@register
@dataclasses.dataclass(frozen=True)
class SumAndSample(_WithoutReplacement):
  """Sum-and-sample: exact sum over the most probable configurations plus one sample.

  With ``C`` the ``num_summed`` most probable categories (configurations, for
  several variables) and ``z`` one sample from the distribution restricted to the
  others (Gumbel-max with ``C`` masked),
  ``g = sum_{c in C} p(c) g(c) + (1 - p(C)) g(z)`` where ``g(b) = f(b) grad log p(b)
  + grad f(b)`` is the single-sample REINFORCE estimator (no baseline) together with
  the pathwise gradient of ``f``: Liu et al.'s Rao-Blackwellization of it over
  ``C``. The surrogate's forward value is ``sum_{c in C} p(c) f(c) + (1 - p(C))
  f(z)``, an unbiased estimate of ``E[f]``. ``num_summed = 0`` is plain REINFORCE.

  With ``baseline=True`` (and ``num_summed >= 1``) each term's ``f(b)`` in the score
  part becomes ``f(b) - beta`` with ``beta = sum_{c in C} p(c) f(c) / p(C)``, the
  mean of ``f`` over the summed categories: it does not depend on the sample ``z``,
  so the estimate stays unbiased (``sum_{c in C} grad p(c) + (1 - p(C)) E[grad log
  p(z)] = grad 1 = 0``), and it costs no evaluation of ``f``. Off by default (the
  estimator of Liu et al.).

  Unbiased (for the logits and for the parameters ``f`` closes over); ``num_summed +
  1`` evaluations of ``f`` (one vmapped call). Categorical and Bernoulli (one
  Bernoulli variable is two categories: ``num_summed = 1`` gives the exact
  gradient).

  ``stochastic=True`` is Kool et al.'s stochastic sum-and-sample estimator: ``C``
  is the first ``num_summed`` of ``num_summed + 1`` samples drawn without
  replacement (Gumbel-top-k; a random set rather than the most probable one) and
  ``z`` the last, which given ``C`` is a sample from the rest. The decomposition
  holds for every set ``C``, so it is unbiased too (with or without the baseline,
  which then depends on ``C`` but not on ``z``). It needs ``num_summed + 1``
  configurations of positive probability.

  Several variables per example: ``C`` is the ``num_summed`` most probable joint
  configurations (a beam search of that width, exact for independent variables)
  and ``z`` the first configuration outside ``C`` in a Gumbel-top-``(num_summed +
  1)`` sample of the joint (stochastic beam search): the Gumbel-max of the joint
  restricted to the complement. ``num_summed`` must be smaller than the number of
  configurations (``K``, or ``K^N``). If all the configurations outside ``C`` have
  probability 0 (``-inf`` logits), their weight ``1 - p(C)`` is 0 and the sampled
  term vanishes.

  Attributes:
    num_summed: m, the number of most probable categories (configurations)
      summed exactly (>= 0).
    baseline: subtract the summed categories' mean of ``f`` in the score terms
      (needs ``num_summed >= 1``).
    stochastic: sum over sampled categories instead of the most probable ones
      (Kool et al.'s stochastic sum-and-sample).

  Example:
    >>> est = gumbax.estimators.get("sum_and_sample", num_summed=2)
    >>> logits = jnp.log(jnp.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]))
    >>> f = lambda b: b @ jnp.array([1.0, 2.0, 3.0, 4.0])
    >>> est(jax.random.key(0), logits, f).shape
    (2,)
    >>> jax.grad(lambda l: est(jax.random.key(0), l, f).sum())(logits).shape
    (2, 4)

  References:
    Liu, Regier, Tripuraneni, Jordan, McAuliffe, Rao-Blackwellized Stochastic
    Gradients for Discrete Distributions, 2019 (arXiv 1810.04777); Kool, van Hoof,
    Welling, Estimating Gradients for Discrete Random Variables by Sampling without
    Replacement, 2020 (arXiv 2002.06043), for the stochastic variant; Kool, van
    Hoof, Welling, Stochastic Beams and Where to Find Them: The Gumbel-Top-k Trick
    for Sampling Sequences Without Replacement, 2019 (arXiv 1903.06059), for the
    joint space.
  """

  name = "sum_and_sample"
  uses_temperature = False
  unbiased = True
  evaluations = "num_summed + 1"
  reference = "Liu et al. 2019"
  num_summed: int = 1
  baseline: bool = False
  stochastic: bool = False

  def __post_init__(self):
    super().__post_init__()
    check_int(self.num_summed, "num_summed", 0)
    for name in ("baseline", "stochastic"):
      if not isinstance(getattr(self, name), bool):
        raise TypeError(f"`{name}` must be a bool; got {getattr(self, name)!r}.")
    if self.baseline and self.num_summed == 0:
      raise ValueError(
          "`baseline=True` needs `num_summed` >= 1 (the baseline is the mean of f over "
          "the summed categories); got num_summed=0.")

  def surrogate(self, key, logits, f, cv):
    del cv
    lc = self._space(logits, f)                                       # batch + (N, K)
    m, batch, (num_vars, num_classes) = self.num_summed, lc.shape[:-2], lc.shape[-2:]
    if m >= float(num_classes) ** num_vars:
      raise ValueError(
          f"`num_summed`={m} must be smaller than the number of configurations, "
          f"{_count(num_classes, num_vars)}, to leave some to sample from (num_summed = "
          "their number - 1 already gives the exact gradient).")
    log_p = jax.nn.log_softmax(lc, axis=-1)
    stats = jax.lax.stop_gradient(log_p)
    if self.stochastic:   # the first m and the last of a Gumbel-top-(m + 1) sample
      if num_vars == 1:
        sample = gumbel_top_k(key, lc[..., 0, :], m + 1)[..., None]
      else:
        sample = vmap_rows(lambda l, r: beam_search(l, m + 1, r), stats, row_keys(key, batch),
                       batch=batch)
      configs = sample                                                # batch + (m + 1, N)
      if num_vars == 1:
        summed = jnp.sum(jax.nn.one_hot(sample[..., :m, 0], num_classes, dtype=jnp.int32),
                         axis=-2) > 0
        log_rest = jax.nn.logsumexp(jnp.where(summed, -jnp.inf, stats[..., 0, :]), axis=-1)
    elif num_vars == 1:   # the top m categories; Gumbel-max with them masked
      row = stats[..., 0, :]
      top = jax.lax.top_k(row, m)[1] if m else jnp.zeros(batch + (0,), jnp.int32)
      summed = jnp.sum(jax.nn.one_hot(top, num_classes, dtype=jnp.int32), axis=-2) > 0
      scores = jnp.where(summed, -jnp.inf, row + gumbel(key, row.shape, row.dtype))
      drawn = jnp.argmax(scores, axis=-1).astype(jnp.int32)
      if m:  # the rest all masked (-inf): any summed category, with weight 0 below
        drawn = jnp.where(jnp.max(scores, axis=-1) > -jnp.inf, drawn, top[..., 0])
      configs = jnp.concatenate([top, drawn[..., None]], axis=-1)[..., None]
      log_rest = jax.nn.logsumexp(jnp.where(summed, -jnp.inf, row), axis=-1)
    else:   # the top m configurations; the best of a Gumbel-top-(m + 1) outside them
      top = vmap_rows(lambda l: beam_search(l, m), stats, batch=batch)   # batch + (m, N)
      sample = vmap_rows(lambda l, r: beam_search(l, m + 1, r), stats, row_keys(key, batch),
                     batch=batch)                                     # batch + (m + 1, N)
      taken = jnp.any(jnp.all(sample[..., :, None, :] == top[..., None, :, :], -1), -1)
      first = jnp.argmax(~taken, axis=-1)
      drawn = jnp.take_along_axis(sample, first[..., None, None], axis=-2)
      configs = jnp.concatenate([top, drawn], axis=-2)                # batch + (m + 1, N)
    log_pi = config_log_prob(log_p, configs)
    lp = jax.lax.stop_gradient(log_pi)
    if num_vars > 1:
      log_rest = log1mexp(jax.nn.logsumexp(lp[..., :m], axis=-1))
    # A masked (-inf) configuration among the summed ones (num_summed above a row's
    # unmasked count) has weight 0; a finite log p keeps its zero term NaN-free.
    log_pi = jnp.where(lp > -jnp.inf, log_pi, 0.0)
    weight = jnp.exp(jnp.concatenate([lp[..., :m], log_rest[..., None]], axis=-1))
    fb = self._evaluate(f, configs, logits)
    fc = jax.lax.stop_gradient(fb).astype(weight.dtype)
    signal = fc
    if self.baseline:
      summed_mass = jnp.sum(weight[..., :m], axis=-1, keepdims=True)
      signal = fc - jnp.sum(weight[..., :m] * fc[..., :m], axis=-1, keepdims=True) / summed_mass
    value = jnp.sum(weight.astype(fb.dtype) * fb, axis=-1)
    return value + jnp.sum(score_term(weight * signal, log_pi), axis=-1).astype(fb.dtype)
