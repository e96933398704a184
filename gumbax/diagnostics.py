"""Gradient-estimator diagnostics: mean, variance, bias, MSE, SNR and cosine over keys.

Generic over any estimator written as ``grad_fn(key) -> pytree of arrays`` (or, with
``vectorized=True``, ``grad_fn(keys) -> stacked gradients``).
:func:`per_sample_gradients` computes such a stack cheaply for models whose noise
enters after a deterministic encoder (one encoder pass and one batched VJP for all
keys); :func:`per_sample_gradient_fn` wraps it as a ``grad_fn`` whose encoder pass
is shared by all chunks of a study.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from gumbax import _checks

__all__ = ["GradientStats", "estimator_statistics", "gradient_statistics",
           "per_sample_gradient_fn", "per_sample_gradients"]

PyTree = Any
_AXIS = "samples"


def _tree_sum(tree: PyTree) -> jax.Array:
  return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(tree))


@dataclasses.dataclass(frozen=True)
class GradientStats:
  """Statistics of ``num_samples`` gradient samples (a JAX pytree; crosses ``jit``).

  Per-coordinate fields have the structure and shapes of one gradient sample; the
  others are scalars. Fields about the ``reference`` (usually the exact gradient)
  are ``None`` when no reference was given. Accumulation is in float32 (float64 for
  float64 gradients).

  Attributes:
    mean: per-coordinate sample mean.
    variance: per-coordinate unbiased sample variance (``ddof=1``).
    total_variance: sum of ``variance`` over all coordinates of all leaves.
    num_samples: number of samples (static pytree metadata).
    reference: the reference gradient, or None.
    bias: ``mean - reference`` per coordinate.
    squared_bias: ``sum(bias**2)`` over all coordinates.
    mse: ``(1/n) sum_i ||g_i - reference||^2`` over all coordinates, accumulated
      directly from the samples; it equals ``squared_bias + total_variance * (n-1)/n``
      up to rounding.
    snr: per-coordinate signal-to-noise ratio ``|mean| / std``. To stay finite it is
      ``|mean| / max(std, eps * |mean|, tiny)`` with ``eps``/``tiny`` of the
      accumulation dtype: a constant non-zero coordinate gets ``1 / eps`` (about
      8.4e6 in float32; a smaller relative spread is below float32 resolution)
      and a constant zero coordinate gets 0.
    cosine: mean over samples of ``cos(g_i, reference)``, each gradient flattened
      over all leaves; a sample (or reference) of norm 0 counts as cosine 0.
    standard_error: per-coordinate ``sqrt(variance / num_samples)``.
    coordinate_mse: per-coordinate ``(1/n) sum_i (g_i - reference)**2``.
  """

  mean: PyTree
  variance: PyTree
  total_variance: jax.Array
  num_samples: int
  reference: PyTree | None
  bias: PyTree | None
  squared_bias: jax.Array | None
  mse: jax.Array | None
  snr: PyTree
  cosine: jax.Array | None
  standard_error: PyTree
  coordinate_mse: PyTree | None

  def per_group(self) -> dict[Any, dict[str, jax.Array | None]]:
    """Total variance, squared bias, MSE and direction per top-level key of a dict gradient.

    Returns:
      For each top-level key (e.g. ``"encoder"``, ``"decoder"``), a dict with the
      entries ``"total_variance"``, ``"squared_bias"``, ``"mse"``, ``"mean_norm"``,
      ``"reference_norm"`` and ``"mean_cosine"``.
      ``mean_norm`` is the norm of the group's mean gradient, ``reference_norm`` the
      reference's, and ``mean_cosine`` the cosine between the two (0 where either
      norm is 0): whether the estimator points, on average, where the reference
      does (unlike ``cosine``, a mean over single samples). Without a reference the
      entries that need it are None. Variance, squared bias and MSE of the groups
      add up to the totals.

    Example:
      >>> def grad_fn(key):
      ...   return {"encoder": jax.random.normal(key, (3,)), "decoder": jnp.ones(2)}
      >>> stats = gumbax.diagnostics.gradient_statistics(grad_fn, jax.random.key(0), 100)
      >>> decoder = stats.per_group()["decoder"]
      >>> float(decoder["total_variance"]), decoder["mse"]  # a constant gradient, no reference
      (0.0, None)
    """
    if not isinstance(self.mean, Mapping):
      raise TypeError(
          "`per_group` needs a gradient that is a dict (one entry per group, e.g. "
          f"{{'encoder': ..., 'decoder': ...}}); got a {type(self.mean).__name__}.")
    has_ref = self.bias is not None
    out = {}
    for name in self.mean:
      mean = self.mean[name]
      mean_norm = jnp.sqrt(_tree_sum(jax.tree.map(jnp.square, mean)))
      group = {"total_variance": _tree_sum(self.variance[name]), "mean_norm": mean_norm,
               "squared_bias": None, "mse": None, "reference_norm": None, "mean_cosine": None}
      if has_ref:
        reference = jax.tree.map(jnp.subtract, mean, self.bias[name])
        ref_norm = jnp.sqrt(_tree_sum(jax.tree.map(jnp.square, reference)))
        dot = _tree_sum(jax.tree.map(jnp.multiply, mean, reference))
        norms = mean_norm * ref_norm
        group.update(
            squared_bias=_tree_sum(jax.tree.map(jnp.square, self.bias[name])),
            mse=_tree_sum(self.coordinate_mse[name]), reference_norm=ref_norm,
            mean_cosine=jnp.where(norms > 0, dot / jnp.where(norms > 0, norms, 1.0), 0.0))
      out[name] = group
    return out


jax.tree_util.register_dataclass(GradientStats, meta_fields=["num_samples"], data_fields=[
    f.name for f in dataclasses.fields(GradientStats) if f.name != "num_samples"])


def _acc_dtype(dtype: Any) -> np.dtype:
  return np.dtype(jnp.promote_types(dtype, jnp.float32))


def _sample_shapes(grad_fn, key, vectorized: bool) -> PyTree:
  """Shapes and dtypes of one gradient sample (checks a vectorized ``grad_fn``)."""
  if not vectorized:
    return jax.eval_shape(grad_fn, key)
  shapes = jax.eval_shape(grad_fn, key[None])
  for path, s in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    if s.shape[:1] != (1,):
      raise ValueError(
          "With vectorized=True, `grad_fn` must map a batch of k keys to gradients whose "
          f"leaves have a leading axis of size k; given 1 key, leaf "
          f"{jax.tree_util.keystr(path)} has shape {s.shape}.")
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), shapes)


def merge_chunk(count: jax.Array, mean: PyTree, m2: PyTree, sq: PyTree | None, grads: PyTree,
                 shift: PyTree, reference: PyTree | None, mask: jax.Array,
                 method: str = "auto") -> tuple[PyTree, PyTree, PyTree | None]:
  """Merges one chunk of samples (leading axis; ``mask[i]`` false rows left out).

  The step :func:`gradient_statistics` repeats for every chunk; it is a module-level
  name (not in ``__all__``) so that the two merge methods can be timed and tested
  on their own.

  The running moments cover ``count`` samples so far: per coordinate, ``mean`` of
  ``d_i = g_i - shift``, ``m2``, the sum of ``(d_i - mean)**2``, and, given a
  ``reference``, ``sq``, the mean of ``(g_i - reference)**2`` (else None). Returns
  the three updated to include the chunk's valid samples.

  ``method="rows"`` visits the samples one at a time with Welford's update, so each
  sample is read once while the running moments stay in cache; ``"reduce"`` takes
  the chunk's moments as masked reductions over the sample axis (several passes
  over the whole chunk) and merges them with Chan et al.'s parallel update;
  ``"auto"`` uses rows on CPU and reductions elsewhere. On a CPU the rows are much
  faster (XLA:CPU reduces over a leading axis slowly, and passes over a chunk that
  does not fit in cache are memory-bound: ``benchmarks/statistics.py``); a GPU
  fuses each reduction with its producer, and would run each row as a kernel.
  """
  leaves, treedef = jax.tree.flatten(grads)
  shifts, means, m2s = jax.tree.leaves(shift), jax.tree.leaves(mean), jax.tree.leaves(m2)
  refs = None if reference is None else jax.tree.leaves(reference)
  sqs = None if sq is None else jax.tree.leaves(sq)

  def by_rows(count, means, m2s, sqs, leaves, shifts, refs, mask):
    def row(j, carry):
      count, means, m2s, sqs = carry
      valid = mask[j]
      count = count + valid.astype(count.dtype)
      new_means, new_m2s, new_sqs = [], [], []
      for i, (g, s, m, q) in enumerate(zip(leaves, shifts, means, m2s)):
        x = jax.lax.dynamic_index_in_dim(g, j, keepdims=False)
        rate = jnp.where(valid, 1 / count, 0).astype(m.dtype)
        d = x - s - m
        m_new = m + d * rate
        new_means.append(m_new)
        new_m2s.append(q + jnp.where(valid, d * (x - s - m_new), 0))
        if refs is not None:
          new_sqs.append(sqs[i] + (jnp.square(x - refs[i]) - sqs[i]) * rate)
      return count, new_means, new_m2s, new_sqs if refs is not None else sqs

    init = (count.astype(jnp.float32), means, m2s, sqs)
    return jax.lax.fori_loop(0, mask.shape[0], row, init)[1:]

  def by_reduce(count, means, m2s, sqs, leaves, shifts, refs, mask):
    def masked_mean(x):
      x = jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, 0)
      return jnp.sum(x, axis=0) / n_b.astype(x.dtype)

    n_b = jnp.sum(mask, dtype=jnp.int32)
    w_b = n_b / (count + n_b)  # weight of the chunk in the merged mean
    update = lambda acc, new: acc + (new - acc) * w_b.astype(acc.dtype)
    new_means, new_m2s = [], []
    for g, s, m, q in zip(leaves, shifts, means, m2s):
      d = g - s[None]
      mean_b = masked_mean(d)
      m2_b = masked_mean(jnp.square(d - mean_b[None])) * n_b.astype(d.dtype)
      delta = mean_b - m  # Chan et al.'s parallel merge
      new_means.append(update(m, mean_b))
      new_m2s.append(q + m2_b + jnp.square(delta) * (count * w_b).astype(delta.dtype))
    new_sqs = None if refs is None else [
        update(q, masked_mean(jnp.square(g - r[None]))) for g, r, q in zip(leaves, refs, sqs)]
    return new_means, new_m2s, new_sqs

  args = (count, means, m2s, sqs, leaves, shifts, refs, mask)
  if method == "rows":
    out = by_rows(*args)
  elif method == "reduce":
    out = by_reduce(*args)
  else:
    out = jax.lax.platform_dependent(*args, cpu=by_rows, default=by_reduce)
  unflatten = lambda xs: jax.tree.unflatten(treedef, xs)
  return unflatten(out[0]), unflatten(out[1]), None if out[2] is None else unflatten(out[2])


# One gradient's shapes per grad_fn object, so repeated calls do not retrace it
# eagerly (the compiled program is cached per grad_fn object too).
_SHAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached_sample_shapes(grad_fn, key, vectorized: bool) -> PyTree:
  signature = (key.shape, key.dtype, vectorized)
  try:
    per_fn = _SHAPES.setdefault(grad_fn, {})
  except TypeError:  # not weakly referenceable: no cache
    return _sample_shapes(grad_fn, key, vectorized)
  if signature not in per_fn:
    per_fn[signature] = _sample_shapes(grad_fn, key, vectorized)
  return per_fn[signature]


@functools.partial(jax.jit, static_argnames=("grad_fn", "num_samples", "chunk_size", "mesh",
                                             "vectorized"))
def _statistics(grad_fn, key, reference, *, num_samples, chunk_size, mesh, vectorized=False):
  """One program: split keys, scan over chunks, merge each into the running moments."""
  n, c = num_samples, chunk_size
  keys = jax.random.split(key, n)
  shapes = _sample_shapes(grad_fn, key, vectorized)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, _acc_dtype(s.dtype)), shapes)
  has_ref = reference is not None

  def body(carry, i):
    count, shift, mean_d, m2, sq, cos = carry  # count: samples merged so far (int32)
    idx = i * c + jnp.arange(c)
    mask = idx < n  # the last chunk is padded with repeats of the last key
    chunk_keys = keys[jnp.minimum(idx, n - 1)]
    if mesh is not None:
      chunk_keys = jax.lax.with_sharding_constraint(
          chunk_keys, NamedSharding(mesh, PartitionSpec(_AXIS)))
    grads = grad_fn(chunk_keys) if vectorized else jax.vmap(grad_fn)(chunk_keys)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
      if g.shape[:1] != (c,):
        raise ValueError(
            f"With vectorized=True, `grad_fn` must return {c} samples for {c} keys; leaf "
            f"{jax.tree_util.keystr(path)} has shape {g.shape}.")
    grads = jax.tree.map(lambda g, z: g.astype(z.dtype), grads, zeros)
    n_b = jnp.sum(mask, dtype=jnp.int32)
    # Shift by the first sample: deviations are O(std) even when |mean| >> std.
    shift = jax.tree.map(lambda s, g: jnp.where(i == 0, g[0], s), shift, grads)
    mean_d, m2, sq = merge_chunk(count, mean_d, m2, sq, grads, shift, reference, mask)
    if has_ref:
      per_sample = lambda t: sum(jnp.sum(x.reshape(c, -1), 1) for x in jax.tree.leaves(t))
      dot = per_sample(jax.tree.map(lambda g, r: g * r[None], grads, reference))
      g_norm = jnp.sqrt(per_sample(jax.tree.map(jnp.square, grads)))
      r_norm = jnp.sqrt(_tree_sum(jax.tree.map(jnp.square, reference)))
      ok = (g_norm > 0) & (r_norm > 0)
      cos_i = jnp.where(ok, dot / jnp.where(ok, g_norm, 1) / jnp.where(ok, r_norm, 1), 0)
      cos = cos + (jnp.sum(jnp.where(mask, cos_i, 0)) - n_b * cos) / (count + n_b)
    return (count + n_b, shift, mean_d, m2, sq, cos), None

  cos0 = jnp.zeros((), _tree_sum(zeros).dtype) if has_ref else None
  init = (jnp.zeros((), jnp.int32), zeros, zeros, zeros, zeros if has_ref else None, cos0)
  (_, shift, mean_d, m2, sq, cos), _ = jax.lax.scan(body, init, jnp.arange(-(-n // c)))

  mean = jax.tree.map(jnp.add, shift, mean_d)
  variance = jax.tree.map(lambda x: x / (n - 1), m2)

  def snr(m, v):  # |m| / max(std, eps |m|, tiny): finite, 0 for 0/0, 1/eps for x/0
    info = jnp.finfo(m.dtype)
    return jnp.abs(m) / jnp.maximum(jnp.maximum(jnp.sqrt(v), info.eps * jnp.abs(m)), info.tiny)

  bias = squared_bias = mse = None
  if has_ref:  # (shift - reference) first: exact when close, so small biases stay accurate
    bias = jax.tree.map(lambda s, r, d: (s - r) + d, shift, reference, mean_d)
    squared_bias = _tree_sum(jax.tree.map(jnp.square, bias))
    mse = _tree_sum(sq)
  return GradientStats(
      mean=mean, variance=variance, total_variance=_tree_sum(variance), num_samples=n,
      reference=reference, bias=bias, squared_bias=squared_bias, mse=mse,
      snr=jax.tree.map(snr, mean, variance), cosine=cos,
      standard_error=jax.tree.map(lambda v: jnp.sqrt(v / n), variance),
      coordinate_mse=sq if has_ref else None)


def _check_reference(reference: PyTree, shapes: PyTree) -> PyTree:
  """Checks ``reference`` against one gradient's shapes; casts it to their dtypes."""
  want, got = jax.tree.structure(shapes), jax.tree.structure(reference)
  if want != got:
    raise ValueError(
        f"`reference` must have the structure of one gradient sample, {want}; got {got}.")
  for (path, s), r in zip(jax.tree_util.tree_flatten_with_path(shapes)[0],
                          jax.tree.leaves(reference)):
    if np.shape(r) != s.shape:
      raise ValueError(
          f"`reference` leaf {jax.tree_util.keystr(path)} must have the gradient's shape "
          f"{s.shape}; got {np.shape(r)}.")
  return jax.tree.map(lambda r, s: jnp.asarray(r, dtype=_acc_dtype(s.dtype)), reference, shapes)


def _gradient_statistics(grad_fn, key, num_samples, reference, chunk_size, devices,
                         vectorized=False):
  """Validates the arguments and runs the program on ``devices`` (private)."""
  num_samples = _checks.check_int(num_samples, "num_samples", 2)
  chunk_size = _checks.check_int(chunk_size, "chunk_size", 1)
  if not callable(grad_fn):
    raise TypeError(f"`grad_fn` must be callable (key -> gradient); got {grad_fn!r}.")
  key = key if isinstance(key, jax.Array) else jnp.asarray(key)
  is_typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  if key.ndim != (0 if is_typed else 1):
    raise ValueError(f"`key` must be a single PRNG key; got shape {key.shape}.")
  if not isinstance(vectorized, bool):
    raise TypeError(f"`vectorized` must be a bool; got {vectorized!r}.")
  shapes = _cached_sample_shapes(grad_fn, key, vectorized)
  if not jax.tree.leaves(shapes):
    raise ValueError("`grad_fn` must return a pytree with at least one array; got "
                     f"{jax.tree.structure(shapes)}.")
  if reference is not None:
    reference = _check_reference(reference, shapes)
  num_devices = len(devices)
  chunk_size = -(-min(chunk_size, num_samples) // num_devices) * num_devices
  mesh = Mesh(np.array(devices), (_AXIS,)) if num_devices > 1 else None
  return _statistics(grad_fn, key, reference, num_samples=num_samples,
                     chunk_size=chunk_size, mesh=mesh, vectorized=vectorized)


def gradient_statistics(grad_fn: Callable[[ArrayLike], PyTree], key: ArrayLike,
                        num_samples: int, *, reference: PyTree | None = None,
                        chunk_size: int = 1024, vectorized: bool = False) -> GradientStats:
  """Mean, variance, bias, MSE, SNR and cosine of a stochastic gradient estimator.

  ``key`` is split into ``num_samples`` keys with ``jax.random.split`` and
  ``grad_fn`` runs once per key, so results depend on ``chunk_size`` and the device
  count only through float rounding. Samples are drawn ``chunk_size`` at a time with
  ``jax.vmap`` in a ``jax.lax.scan`` (the last chunk is padded with repeats of the
  last key and masked; with ``vectorized=True``, ``grad_fn`` receives the chunk's
  keys itself, e.g. a :func:`per_sample_gradient_fn`) and never stored: memory is
  O(chunk_size x gradient size) plus 8 bytes per key. Moments are taken of the
  deviations from a shift (the first sample), so the variance stays accurate when
  ``|mean| >> std``; each chunk is merged into them sample by sample with Welford's
  update on a CPU, and elsewhere as masked reductions merged with Chan et al.'s
  parallel update (both exact up to rounding). With several local devices
  each chunk's keys are split across all of them (``chunk_size`` is rounded up to
  a multiple of the device count).

  A Python function: it validates static arguments eagerly and runs one jitted
  program, compiled once per ``grad_fn`` object (pass the same function, not a new
  lambda, to reuse it), ``num_samples`` and ``chunk_size``. It can be called inside
  ``jax.jit`` or ``jax.vmap`` with a traced ``key`` and ``reference``.

  Args:
    grad_fn: ``key -> pytree of arrays``, one gradient sample per key; must be
      traceable by ``jax.vmap``.
    key: a PRNG key (``jax.random.key`` or a legacy uint32 key).
    num_samples: number of gradient samples, an int >= 2.
    reference: optional pytree with the structure and shapes of one gradient
      (e.g. the exact gradient) for ``bias``, ``squared_bias``, ``mse`` and
      ``cosine``.
    chunk_size: number of samples evaluated at once, an int >= 1.
    vectorized: if True, ``grad_fn`` maps a batch of ``k`` keys (shape ``(k,)``
      for typed keys) to the ``k`` gradient samples stacked on a leading axis,
      instead of one key to one sample; sample ``i`` must depend on key ``i``
      only. Use it when a batched computation is cheaper than ``jax.vmap`` of
      the per-key one (:func:`per_sample_gradients`).

  Returns:
    A :class:`GradientStats`.

  Example:
    >>> theta = 0.3
    >>> def grad_fn(key):  # REINFORCE for d/dtheta E[b], b ~ Bernoulli(sigmoid(theta))
    ...   b = jax.random.bernoulli(key, jax.nn.sigmoid(theta)).astype(jnp.float32)
    ...   return b * (b - jax.nn.sigmoid(theta))
    >>> exact = jax.nn.sigmoid(theta) * (1 - jax.nn.sigmoid(theta))  # d/dtheta sigmoid(theta)
    >>> stats = gumbax.diagnostics.gradient_statistics(grad_fn, jax.random.key(0), 10_000,
    ...                                                reference=exact)
    >>> stats.num_samples, bool(abs(stats.bias) < 4 * stats.standard_error)  # unbiased
    (10000, True)

  References:
    Grathwohl et al., Backpropagation through the Void: Optimizing Control Variates
    for Black-Box Gradient Estimation, 2018 (arXiv 1711.00123);
    Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, 2018
    (arXiv 1802.04537);
    Chan, Golub, LeVeque, Updating Formulae and a Pairwise Algorithm for Computing
    Sample Variances, 1979; Welford, Note on a Method for Calculating Corrected
    Sums of Squares and Products, Technometrics, 1962.
  """
  return _gradient_statistics(grad_fn, key, num_samples, reference, chunk_size,
                              tuple(jax.local_devices()), vectorized)


def estimator_statistics(estimator, key: ArrayLike, logits: ArrayLike, f: Callable,
                         cv: dict | None = None, *, num_samples: int = 10_000,
                         reference: Any = "exact", chunk_size: int = 1024) -> GradientStats:
  """:func:`gradient_statistics` of an estimator's gradient for the logits.

  Each sample is ``jax.grad`` of the summed surrogate ``estimator(key_i, logits, f,
  cv)`` with respect to ``logits``.

  Args:
    estimator: a :class:`gumbax.estimators.Estimator` (or a registry name).
    key: a PRNG key.
    logits: the logits at which to study the estimator.
    f: the loss, as in the estimator contract.
    cv: the estimator's control variate (``estimator.init`` or trained).
    num_samples: number of gradient samples.
    reference: ``"exact"`` (enumeration with the ``exact`` estimator; raises
      ``ValueError`` when the problem is too large), an array of the logits' shape,
      or None.
    chunk_size: samples evaluated at once.

  Returns:
    A :class:`GradientStats` for the logits' gradient.

  Example:
    >>> key, logits = jax.random.key(0), jnp.array([[0.5, -0.5, 0.0]])
    >>> f = lambda b: jnp.sum(b * jnp.array([1.0, 2.0, 3.0]), axis=-1)  # one value per example
    >>> stats = gumbax.diagnostics.estimator_statistics("rloo", key, logits, f)
    >>> stats.mean.shape, bool(stats.squared_bias < stats.total_variance / 100)  # unbiased
    ((1, 3), True)

  References:
    Tucker et al., REBAR, 2017 (arXiv 1703.07370); Grathwohl et al., Backpropagation
    through the Void, 2018 (arXiv 1711.00123).
  """
  from gumbax import estimators  # a sibling module; imported here to keep import order flat

  if isinstance(estimator, str):
    estimator = estimators.get(estimator)
  logits = jnp.asarray(logits)
  if isinstance(reference, str):
    if reference != "exact":
      raise ValueError(f"`reference` must be 'exact', an array or None; got {reference!r}.")
    exact = estimators.get("exact", distribution=estimator.distribution)
    reference = jax.grad(lambda l: jnp.sum(exact(key, l, f)))(logits)

  def grad_fn(k):
    return jax.grad(lambda l: jnp.sum(estimator(k, l, f, cv)))(logits)

  return gradient_statistics(grad_fn, key, num_samples, reference=reference,
                             chunk_size=chunk_size)


_ENCODER_VJPS = ("auto", "vmap", "map")


def per_sample_gradients(encoder: Callable[[PyTree], PyTree],
                         head: Callable[[ArrayLike, PyTree, PyTree], ArrayLike],
                         encoder_params: PyTree, head_params: PyTree, keys: ArrayLike, *,
                         encoder_vjp: str = "auto") -> tuple[PyTree, PyTree]:
  """Per-key gradients of a model whose randomness enters after a deterministic encoder.

  For ``loss_i = head(keys[i], encoder(encoder_params), head_params)`` returns the
  gradients of every ``loss_i`` with respect to ``encoder_params`` and
  ``head_params``, stacked on a new leading axis: the same values as
  ``jax.vmap(jax.grad(lambda ep, hp, k: head(k, encoder(ep), hp), argnums=(0, 1)),
  in_axes=(None, None, 0))(encoder_params, head_params, keys)``, computed with less
  work. The encoder (e.g. a VAE's inference network up to the logits) runs
  forward once; the head (sampling with the key, the decoder and the loss) runs
  per key; and since the encoder's share of each gradient is linear in that
  sample's gradient with respect to the encoder's output, one ``jax.vjp`` of the
  encoder, applied to the batch of those cotangents, gives all encoder gradients.
  For variance studies of gradient estimators use :func:`per_sample_gradient_fn`
  (the same gradients, with the encoder's forward pass shared by every chunk) with
  ``gradient_statistics(..., vectorized=True)``.

  ``encoder_vjp`` chooses how that pullback meets the batch: ``"vmap"`` (one
  batched program; best on GPUs and TPUs), ``"map"`` (``jax.lax.map``, one
  cotangent at a time: XLA's CPU backend runs the per-sample weight gradients of a
  batched pullback up to twice as slowly as the same matrix products one by one)
  or ``"auto"`` (``"map"`` on CPU, ``"vmap"`` elsewhere, chosen when the
  program is compiled, via ``jax.lax.platform_dependent``).

  Works under ``jax.jit`` and ``jax.vmap``; ``encoder`` and ``head`` must be
  traceable (no key: all randomness belongs in ``head``). Pass ``()`` as
  ``head_params`` (and close over the head's parameters) when only the encoder's
  gradients are wanted: the head's weight gradients are then not computed.

  Args:
    encoder: ``encoder_params -> latent`` (a pytree of floating-point arrays, e.g.
      the logits), deterministic.
    head: ``(key, latent, head_params) -> loss``, a scalar for one key.
    encoder_params: the encoder's parameters (pytree of floating-point arrays).
    head_params: the head's parameters (pytree; may be empty).
    keys: a batch of PRNG keys, shape ``(k,)`` (typed) or ``(k, 2)`` (legacy uint32).
    encoder_vjp: ``"auto"``, ``"vmap"`` or ``"map"``.

  Returns:
    ``(encoder_grads, head_grads)``: pytrees of ``encoder_params``' and
    ``head_params``' structure with a leading axis of size ``k``.

  Example:
    >>> x = jnp.ones((2, 4))                           # a batch of 2 inputs
    >>> enc_params, dec_params = jnp.full((4, 6), 0.1), jnp.full((6, 4), 0.1)
    >>> encoder = lambda p: (x @ p).reshape(2, 3, 2)   # the logits: 3 latents, 2 classes
    >>> def head(key, logits, p):                      # a reconstruction loss at a sample
    ...   z = gumbax.gumbel_softmax(key, logits, 0.5).reshape(2, 6)
    ...   return jnp.mean((z @ p - x) ** 2)
    >>> keys = jax.random.split(jax.random.key(0), 8)
    >>> enc_grads, dec_grads = gumbax.diagnostics.per_sample_gradients(
    ...     encoder, head, enc_params, dec_params, keys)
    >>> enc_grads.shape, dec_grads.shape               # one gradient per key
    ((8, 4, 6), (8, 6, 4))

  References:
    Goodfellow, Efficient Per-Example Gradient Computations, 2015 (arXiv
    1510.01799); Rochette, Manoel, Tramel, Efficient Per-Example Gradient
    Computations in Convolutional Neural Networks, 2019 (arXiv 1912.06015).
  """
  return per_sample_gradient_fn(encoder, head, encoder_params, head_params,
                                encoder_vjp=encoder_vjp)(keys)


def per_sample_gradient_fn(encoder: Callable[[PyTree], PyTree],
                           head: Callable[[ArrayLike, PyTree, PyTree], ArrayLike],
                           encoder_params: PyTree, head_params: PyTree, *,
                           encoder_vjp: str = "auto") -> Callable[[ArrayLike], tuple[PyTree, PyTree]]:
  """:func:`per_sample_gradients` as a ``grad_fn(keys)``, with the encoder run once.

  Runs the encoder forward now (or, under ``jax.jit``, once in the traced program)
  and returns ``grad_fn(keys) -> (encoder_grads, head_grads)``, equal to
  ``per_sample_gradients(encoder, head, encoder_params, head_params, keys,
  encoder_vjp=encoder_vjp)`` for every batch of keys. Passed to
  ``gradient_statistics(grad_fn, ..., vectorized=True)``, the encoder's forward pass
  and its residuals are shared by all chunks instead of being recomputed per chunk.
  On a CPU, chunks of a few samples are fastest: their gradients stay in the cache
  while their moments are taken (``benchmarks/variance.py``, benchmarks/RESULTS.md).

  Args:
    encoder, head, encoder_params, head_params, encoder_vjp: as in
      :func:`per_sample_gradients`.

  Returns:
    ``grad_fn(keys)`` for a batch of PRNG keys (shape ``(k,)`` typed or ``(k, 2)``
    uint32), returning pytrees with a leading axis of size ``k``.

  Example:
    >>> x = jnp.ones((2, 4))                           # a batch of 2 inputs
    >>> enc_params, dec_params = jnp.full((4, 6), 0.1), jnp.full((6, 4), 0.1)
    >>> encoder = lambda p: (x @ p).reshape(2, 3, 2)   # the logits: 3 latents, 2 classes
    >>> head = lambda key, logits, p: jnp.mean(
    ...     (gumbax.gumbel_softmax(key, logits, 0.5).reshape(2, 6) @ p - x) ** 2)
    >>> grad_fn = gumbax.diagnostics.per_sample_gradient_fn(encoder, head, enc_params,
    ...                                                     dec_params)
    >>> stats = gumbax.diagnostics.gradient_statistics(grad_fn, jax.random.key(0), 1_000,
    ...                                                vectorized=True, chunk_size=4)
    >>> jax.tree.map(jnp.shape, stats.variance)         # (encoder, decoder) gradients
    ((4, 6), (6, 4))

  References:
    Goodfellow, Efficient Per-Example Gradient Computations, 2015 (arXiv
    1510.01799).
  """
  for name, fn in (("encoder", encoder), ("head", head)):
    if not callable(fn):
      raise TypeError(f"`{name}` must be callable; got {fn!r}.")
  if encoder_vjp not in _ENCODER_VJPS:
    raise ValueError(f"`encoder_vjp` must be one of {list(_ENCODER_VJPS)}; got {encoder_vjp!r}.")
  latent, pullback = jax.vjp(encoder, encoder_params)

  def batched(cotangents):
    return jax.vmap(pullback)(cotangents)[0]

  def looped(cotangents):
    return jax.lax.map(lambda c: pullback(c)[0], cotangents)

  def grad_fn(keys):
    keys = keys if isinstance(keys, jax.Array) else jnp.asarray(keys)
    is_typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if keys.ndim != (1 if is_typed else 2) or not (is_typed or keys.dtype == jnp.uint32):
      raise ValueError(
          "`keys` must be a batch of PRNG keys, shape (k,) for typed keys or (k, 2) uint32 "
          f"for legacy ones (e.g. jax.random.split(key, k)); got shape {keys.shape} and "
          f"dtype {keys.dtype}.")
    loss = jax.eval_shape(head, keys[0], latent, head_params)
    if not (isinstance(loss, jax.ShapeDtypeStruct) and loss.shape == ()
            and jnp.issubdtype(loss.dtype, jnp.floating)):
      got = (f"shape {loss.shape} and dtype {loss.dtype}"
             if isinstance(loss, jax.ShapeDtypeStruct) else repr(jax.tree.structure(loss)))
      raise ValueError(
          f"`head` must return one floating-point scalar loss per key; got {got}. Reduce "
          "over the data batch inside `head` (e.g. a mean over examples).")
    latent_grads, head_grads = jax.vmap(jax.grad(head, argnums=(1, 2)),
                                        in_axes=(0, None, None))(keys, latent, head_params)
    if encoder_vjp == "vmap":
      encoder_grads = batched(latent_grads)
    elif encoder_vjp == "map":
      encoder_grads = looped(latent_grads)
    else:
      encoder_grads = jax.lax.platform_dependent(latent_grads, cpu=looped, default=batched)
    return encoder_grads, head_grads

  return grad_fn
