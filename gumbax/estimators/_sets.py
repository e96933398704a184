"""Sets of configurations for the without-replacement estimators (private module).

Beam search (deterministic and stochastic) over the joint configurations of
independent categorical variables, and the log-probabilities of unordered samples
drawn without replacement, ``p^{D-A}(S - A)`` for ``A`` = {}, {s}, {s, t}: exactly by
a recursion over subsets, or by numerical integration.

References:
  Kool, van Hoof, Welling, Stochastic Beams and Where to Find Them: The Gumbel-Top-k
  Trick for Sampling Sequences Without Replacement, 2019 (arXiv 1903.06059); Kool,
  van Hoof, Welling, Estimating Gradients for Discrete Random Variables by Sampling
  without Replacement, 2020 (arXiv 2002.06043).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from gumbax.gumbel import gumbel


def config_log_prob(log_p, configs):
  """``log p`` of configurations ``batch + (n, N)`` under ``batch + (N, K)`` log-probs."""
  hit = jax.nn.one_hot(configs, log_p.shape[-1], dtype=bool)
  return jnp.sum(jnp.where(hit, log_p[..., None, :, :], 0.0), axis=(-2, -1))


def log1mexp(x):
  """``log(1 - exp(x))`` for ``x <= 0`` (larger ``x``, rounding, is read as 0)."""
  x = jnp.minimum(x, 0.0)
  xs = jnp.where(x > -math.log(2.0), x, -1.0)
  xl = jnp.where(x > -math.log(2.0), -1.0, x)
  return jnp.where(x > -math.log(2.0), jnp.log(-jnp.expm1(xs)), jnp.log1p(-jnp.exp(xl)))


def shift_maximum(g, top):
  """Gumbels ``g`` (..., K) shifted to have maximum ``top`` (..., 1), in the stable
  form ``top - log(exp(-top) - exp(-max g) + exp(-g))`` of Kool et al. 2019."""
  z = jnp.max(g, axis=-1, keepdims=True)
  u = top - g + jnp.log1p(-jnp.exp(g - z))
  return top - jax.nn.relu(u) - jnp.log1p(jnp.exp(-jnp.abs(u)))


def beam_search(log_p, width, key=None):
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
      child = shift_maximum(g, score[:, None])
    keep = min(width, child.size)
    score, flat = jax.lax.top_k(child.reshape(-1), keep)
    parent, category = flat // num_classes, (flat % num_classes).astype(jnp.int32)
    phi = child_phi.reshape(-1)[flat]
    configs = jnp.concatenate([configs[parent], category[:, None]], axis=1)
  return configs


def vmap_rows(fn, *arrays, batch):
  """``fn`` vmapped over the flattened ``batch`` dims of every array."""
  out = jax.vmap(fn)(*[a.reshape((-1,) + a.shape[len(batch):]) for a in arrays])
  return jax.tree_util.tree_map(lambda x: x.reshape(batch + x.shape[1:]), out)


def row_keys(key, batch):
  """One key per example (typed keys, or legacy uint32 ones with their trailing axis)."""
  keys = jax.random.split(key, math.prod(batch))
  return keys.reshape(batch + keys.shape[1:])


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


def exact_set_log_probs(log_p, log_rest):
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


def integrated_set_log_probs(log_p, log_rest, num_points):
  """The same as :func:`exact_set_log_probs`, by numerical integration.

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


def set_log_probs(log_p, index, *, exact: bool, num_points: int = 128):
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
    return exact_set_log_probs(log_ps, log_rest)
  return integrated_set_log_probs(log_ps, log_rest, num_points)
