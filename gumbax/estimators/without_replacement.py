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
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from gumbax import _checks
from gumbax._checks import check_int
from gumbax.estimators._base import Estimator, register, score_term
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


def _log_prob(log_p, configs):
  """``log p`` of configurations ``batch + (n, N)`` under ``batch + (N, K)`` log-probs."""
  hit = jax.nn.one_hot(configs, log_p.shape[-1], dtype=bool)
  return jnp.sum(jnp.where(hit, log_p[..., None, :, :], 0.0), axis=(-2, -1))


def _log1m(x):
  """``log(1 - exp(x))`` for ``x <= 0`` (larger ``x``, rounding, is read as 0)."""
  x = jnp.minimum(x, 0.0)
  xs = jnp.where(x > -math.log(2.0), x, -1.0)
  xl = jnp.where(x > -math.log(2.0), -1.0, x)
  return jnp.where(x > -math.log(2.0), jnp.log(-jnp.expm1(xs)), jnp.log1p(-jnp.exp(xl)))


def _shift_maximum(g, top):
  """Gumbels ``g`` (..., K) shifted to have maximum ``top`` (..., 1), in the stable
  form ``top - log(exp(-top) - exp(-max g) + exp(-g))`` of Kool et al. 2019."""
  z = jnp.max(g, axis=-1, keepdims=True)
  u = top - g + jnp.log1p(-jnp.exp(g - z))
  return top - jax.nn.relu(u) - jnp.log1p(jnp.exp(-jnp.abs(u)))


def _beam_search(log_p, width, key=None):
  """The ``width`` best joint configurations of independent variables, best first.

  ``log_p`` (N, K) for one example. Without ``key``: the most probable ones (a beam
  search of this width is exact for independent variables: a configuration's
  prefix is among the ``width`` most probable prefixes, or ``width`` others beat
  it with the same suffix). With ``key``: stochastic beam search, whose result is
  the Gumbel-top-k sample of the joint distribution (each child's Gumbel is
  conditioned on its parent's as the maximum). Returns int32 (width, N).
  """
  num_vars, num_classes = log_p.shape
  keys = None if key is None else jax.random.split(key, num_vars)
  phi = jnp.zeros((1,), log_p.dtype)
  score = jnp.zeros((1,), log_p.dtype)
  configs = jnp.zeros((1, 0), jnp.int32)
  for n in range(num_vars):
    child_phi = phi[:, None] + log_p[n][None, :]                     # (beams, K)
    child = child_phi
    if keys is not None:
      g = child_phi + gumbel(keys[n], child_phi.shape, child_phi.dtype)
      child = _shift_maximum(g, score[:, None])
    keep = min(width, child.size)
    score, flat = jax.lax.top_k(child.reshape(-1), keep)
    parent, category = flat // num_classes, (flat % num_classes).astype(jnp.int32)
    phi = child_phi.reshape(-1)[flat]
    configs = jnp.concatenate([configs[parent], category[:, None]], axis=1)
  return configs


def _rows(fn, *arrays, batch):
  """``fn`` vmapped over the flattened ``batch`` dims of every array."""
  out = jax.vmap(fn)(*[a.reshape((-1,) + a.shape[len(batch):]) for a in arrays])
  return jax.tree_util.tree_map(lambda x: x.reshape(batch + x.shape[1:]), out)


def _row_keys(key, batch):
  """One key per example (typed keys, or legacy uint32 ones with their trailing axis)."""
  keys = jax.random.split(key, math.prod(batch))
  return keys.reshape(batch + keys.shape[1:])


# -- probabilities of unordered samples ---------------------------------------


def _log1m_exp_neg(z):
  """``log(1 - exp(-exp(z)))``, finite for every finite ``z`` (no gradient needed)."""
  x = jnp.exp(z)
  small = z < -3.0
  series = z - x / 2 + x * x / 24                 # log(x) + log((1 - e^-x) / x)
  xs = jnp.where(small, 1.0, x)
  large = jnp.where(xs > math.log(2.0), jnp.log1p(-jnp.exp(-xs)), jnp.log(-jnp.expm1(-xs)))
  return jnp.where(small, series, large)


@functools.lru_cache(maxsize=None)
def _subsets(k: int):
  """Per size c = 1..k: (subset bitmasks, their members, the subsets without each)."""
  masks = np.arange(2 ** k)
  bits = (masks[:, None] >> np.arange(k)[None, :]) & 1
  tables = []
  for c in range(1, k + 1):
    chosen = masks[bits.sum(1) == c]
    members = np.stack([np.flatnonzero(bits[m]) for m in chosen])
    tables.append((chosen, members, chosen[:, None] ^ (1 << members)))
  return tables


def _leave_out(k: int) -> tuple[np.ndarray, np.ndarray]:
  """Bitmasks of ``S - {s}`` (k,) and ``S - {s, t}`` (k, k; ``S - {s}`` on the diagonal)."""
  full = 2 ** k - 1
  one = full & ~(1 << np.arange(k))
  return one, one[:, None] & one[None, :]


def _exact_set_log_probs(log_p, log_rest):
  """``log p^{D-A}(S - A)`` for ``A`` = {}, {s}, {s, t} by the subset recursion.

  With ``r = p(D - S)`` and ``Q(T) = p^{D-(S-T)}(T)`` (``T`` drawn without replacement
  from the domain without ``S - T``, in any order), the first draw of ``T`` is ``x``
  with probability ``p_x / (r + p(T))``, so ``Q(T) = sum_{x in T} p_x Q(T - x) /
  (r + p(T))``, ``Q({}) = 1``: the sum over the ``|T|!`` orderings of their
  Plackett-Luce probabilities, grouped by suffix. All in log space.
  """
  k = log_p.shape[-1]
  log_q = jnp.full((2 ** k,), -jnp.inf, log_p.dtype).at[0].set(0.0)
  for chosen, members, without in _subsets(k):
    lp = log_p[members]
    num = jax.nn.logsumexp(lp + log_q[without], axis=-1)
    den = jnp.logaddexp(log_rest, jax.nn.logsumexp(lp, axis=-1))
    log_q = log_q.at[chosen].set(num - den)
  one, two = _leave_out(k)
  return log_q[2 ** k - 1], log_q[one], log_q[two]


def _integrated_set_log_probs(log_p, log_rest, num_points):
  """The same as :func:`_exact_set_log_probs`, by numerical integration.

  ``p^{D-A}(S - A) = int_0^inf r e^{-r t} prod_{x in S-A} (1 - e^{-p_x t}) dt`` (an
  exponential race: the set's last arrival precedes the rest's first), Kool et al.'s
  ``int_0^1 prod (1 - u^{p_x / r}) du`` with ``u = e^{-r t}``. With ``t = e^y`` the
  integrand is log-concave in ``y`` and decays at least like ``e^{0.63 (y + log r)}``
  below ``y = -log r - 1`` and double-exponentially above ``-log r + log(k + 1)``,
  so ``num_points`` equally spaced nodes on ``[-log r - 40, -log r + log(k + 1) + 5]``
  (the trapezoidal rule, exponentially accurate for such smooth integrands) cover it.
  ``r = 0`` (``S`` is all of the support) gives probability 1 for every set.
  """
  k = log_p.shape[-1]
  empty = log_rest == -jnp.inf
  lr = jnp.where(empty, 0.0, log_rest)
  lo, hi = -lr - 40.0, -lr + math.log(k + 1) + 5.0
  y = lo + (hi - lo) * jnp.linspace(0.0, 1.0, num_points, dtype=log_p.dtype)
  log_h = jnp.log((hi - lo) / (num_points - 1))
  base = lr + y - jnp.exp(lr + y)                                  # (n,)
  terms = _log1m_exp_neg(log_p[None, :] + y[:, None])              # (n, k)
  keep = 1.0 - np.eye(k)
  keep2 = (keep[:, None, :] * keep[None, :, :]).astype(np.float32)  # x not in {s, t}
  left = jnp.einsum("nx,stx->nst", terms, jnp.asarray(keep2, log_p.dtype),
                    precision=jax.lax.Precision.HIGHEST)
  log_two = log_h + jax.nn.logsumexp(base[:, None, None] + left, axis=0)
  log_all = log_h + jax.nn.logsumexp(base + jnp.sum(terms, axis=-1), axis=0)
  log_one = jnp.diagonal(log_two)
  zero = lambda v: jnp.where(empty, 0.0, v)
  return zero(log_all), zero(log_one), zero(log_two)


def _set_log_probs(log_p, index, *, exact: bool, num_points: int = 128):
  """Log-probabilities of an unordered sample and of its leave-one/two-out subsets.

  For one row: ``log_p`` (K,) normalized log-probabilities, ``index`` (k,) distinct
  categories forming ``S``. Returns ``(log p(S), log p^{D-s}(S - s) (k,),
  log p^{D-{s,t}}(S - {s,t}) (k, k))`` (the diagonal of the last is the middle one).
  ``exact``: the subset recursion; else numerical integration.
  """
  in_s = jnp.zeros(log_p.shape, bool).at[index].set(True)
  log_rest = jax.nn.logsumexp(jnp.where(in_s, -jnp.inf, log_p))
  log_ps = log_p[index]
  if exact:
    return _exact_set_log_probs(log_ps, log_rest)
  return _integrated_set_log_probs(log_ps, log_rest, num_points)


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
      configs = _rows(lambda l, r: _beam_search(l, k, r), stats, _row_keys(key, batch),
                      batch=batch)
    log_ps = _log_prob(log_p, configs)                                # batch + (k,)
    lp = jax.lax.stop_gradient(log_ps)
    if num_vars > 1:
      log_rest = _log1m(jax.nn.logsumexp(lp, axis=-1))
    fb = self._evaluate(f, configs, logits)                           # batch + (k,)
    exact = k <= self.exact_max
    probs = lambda a, r: (_exact_set_log_probs(a, r) if exact
                          else _integrated_set_log_probs(a, r, self.num_points))
    log_all, log_one, log_two = _rows(probs, lp, log_rest, batch=batch)
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
        sample = _rows(lambda l, r: _beam_search(l, m + 1, r), stats, _row_keys(key, batch),
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
      top = _rows(lambda l: _beam_search(l, m), stats, batch=batch)   # batch + (m, N)
      sample = _rows(lambda l, r: _beam_search(l, m + 1, r), stats, _row_keys(key, batch),
                     batch=batch)                                     # batch + (m + 1, N)
      taken = jnp.any(jnp.all(sample[..., :, None, :] == top[..., None, :, :], -1), -1)
      first = jnp.argmax(~taken, axis=-1)
      drawn = jnp.take_along_axis(sample, first[..., None, None], axis=-2)
      configs = jnp.concatenate([top, drawn], axis=-2)                # batch + (m + 1, N)
    log_pi = _log_prob(log_p, configs)
    lp = jax.lax.stop_gradient(log_pi)
    if num_vars > 1:
      log_rest = _log1m(jax.nn.logsumexp(lp[..., :m], axis=-1))
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
