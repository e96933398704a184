"""Flax NNX layers: discrete bottlenecks that behave like ``nnx.Dropout``.

Each layer draws its noise from a named rng stream (``"gumbel"`` by default), has a
``deterministic`` switch settable at construction, at call time (which wins) or for
a whole model with ``model.train()`` / ``model.eval()`` / ``nnx.view``, and a
temperature that is fixed, passed per call (e.g. from a :mod:`gumbax.schedules`
schedule) or learned. The maths lives in the library functions; :mod:`gumbax.linen`
has the same layers for Flax linen and gives identical outputs for the same key and
parameters.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from gumbax import _layers
from gumbax._layers import LatentOutput

__all__ = ["CategoricalLatent", "GumbelSoftmax", "LatentOutput", "RelaxedBernoulli",
           "SubsetSelector"]

RngsLike = Any  # nnx.Rngs | nnx.RngStream | jax.Array | None


class _Stochastic(nnx.Module):
  """Shared plumbing: rng stream, ``deterministic`` switch, fixed or learned temperature."""

  def _setup(self, temperature, *, hard, axis, learn_temperature, temperature_shape,
             min_temperature, deterministic, eval_mode, rng_collection, rngs) -> None:
    name = type(self).__name__
    _layers.check_common(name, temperature, hard, axis, learn_temperature, temperature_shape,
                         min_temperature, deterministic, eval_mode, rng_collection)
    self.temperature = temperature
    self.hard = hard
    self.axis = axis
    self.learn_temperature = learn_temperature
    self.temperature_shape = temperature_shape
    self.min_temperature = min_temperature
    self.deterministic = deterministic
    self.eval_mode = eval_mode
    self.rng_collection = rng_collection
    if learn_temperature:
      self.log_temperature = nnx.Param(
          _layers.initial_log_temperature(temperature, temperature_shape))
    else:
      self.log_temperature = nnx.data(None)
    self.missing_rngs = "no `rngs` were passed at construction or at call time"
    if isinstance(rngs, nnx.Rngs):
      if rng_collection in rngs or "default" in rngs:
        self.rngs = rngs[rng_collection].fork()
      else:
        self.rngs = nnx.data(None)
        self.missing_rngs = (
            f"the `rngs` passed at construction have neither a {rng_collection!r} nor a "
            "'default' stream, and none were passed at call time")
    elif isinstance(rngs, nnx.RngStream):
      self.rngs = rngs.fork()
    elif rngs is None:
      self.rngs = nnx.data(None)
    else:
      raise TypeError(f"`rngs` must be an nnx.Rngs, nnx.RngStream or None; got {type(rngs)}.")

  def _resolve(self, temperature, deterministic, rngs):
    """(deterministic, temperature, key) for one call; the key is None if unused."""
    name = type(self).__name__
    det = _layers.resolve_deterministic(name, "nnx", self.deterministic, deterministic)
    log_tau = None if self.log_temperature is None else self.log_temperature[...]
    tau = _layers.resolve_temperature(name, self.temperature, log_tau, temperature,
                                      self.min_temperature)
    return det, tau, (None if det else self._key(rngs))

  def _key(self, rngs: RngsLike) -> jax.Array:
    name = type(self).__name__
    if rngs is None:
      rngs = self.rngs
      if rngs is None:
        raise _layers.missing_rng_error(name, "nnx", self.rng_collection, self.missing_rngs)
    if isinstance(rngs, nnx.Rngs):
      # By name, never `rngs.gumbel()`: attribute access on Rngs calls its Gumbel *sampler*.
      try:
        stream = rngs[self.rng_collection]
      except KeyError:
        raise _layers.missing_rng_error(
            name, "nnx", self.rng_collection,
            f"the `rngs` passed at call time have neither a {self.rng_collection!r} nor a "
            "'default' stream") from None
      return stream()
    if isinstance(rngs, nnx.RngStream):
      return rngs()
    if isinstance(rngs, jax.Array):
      return rngs
    raise TypeError(
        f"`rngs` must be an nnx.Rngs, nnx.RngStream or a PRNG key; got {type(rngs)}.")

  def set_view(self, deterministic: bool | None = None):
    """Used by ``nnx.view(model, deterministic=...)``.

    Args:
      deterministic: if True, evaluation mode (no noise); if False, training mode.
    """
    if deterministic is not None:
      self.deterministic = deterministic


class GumbelSoftmax(_Stochastic):
  """Gumbel-softmax (Concrete) layer: relaxed or straight-through one-hot samples.

  Training (``deterministic=False``): ``gumbax.gumbel_softmax(key, logits, tau,
  hard=hard, axis=axis)``, the relaxed sample or, with ``hard=True``, the exact
  one-hot sample with the relaxed gradient (ST-Gumbel). Evaluation
  (``deterministic=True``) draws no noise and returns, by ``eval_mode``:
  ``"argmax"`` the exact one-hot of ``argmax(logits)`` (the mode, no gradient) or
  ``"softmax"`` the noiseless ``softmax(logits / tau)`` (whatever ``hard`` is).

  The temperature is fixed (``temperature``, a number or an array broadcasting
  against the logits without the category axis), overridden per call
  (``layer(logits, temperature=schedule(step))``), or learned with
  ``learn_temperature=True``: then the parameter ``log_temperature`` of shape
  ``temperature_shape`` (e.g. ``(num_latents,)`` for one per latent) starts at
  ``log(temperature)`` and the temperature is ``exp(log_temperature)``, clamped to
  ``[min_temperature, e^80]`` in the forward pass only (the gradient is that of
  ``exp``), so it stays positive with finite gradients whatever the updates.

  Args:
    temperature: positive temperature (initial value if learned).
    hard: straight-through: one-hot forward value, relaxed gradient.
    axis: the category axis.
    learn_temperature: make the temperature a parameter.
    temperature_shape: shape of the learned temperature (``()``: one scalar).
    min_temperature: lower bound of the learned temperature.
    deterministic: evaluation mode if True; may be left None and given per call.
    eval_mode: ``"argmax"`` or ``"softmax"``, the deterministic output.
    rng_collection: the name of the rng stream.
    rngs: an ``nnx.Rngs`` (the stream named ``rng_collection`` is forked, falling
      back to its default stream) or an ``nnx.RngStream``; optional if keys are
      passed at call time or the layer is only used deterministically.

  Example:
    >>> from flax import nnx
    >>> logits = jnp.zeros((2, 3))                      # 2 examples, 3 classes
    >>> layer = gumbax.nnx.GumbelSoftmax(0.5, hard=True, rngs=nnx.Rngs(gumbel=0))
    >>> y = layer(logits, deterministic=False)
    >>> y.shape, y.sum(axis=-1).tolist()                # one-hot rows
    ((2, 3), [1.0, 1.0])

  References:
    Jang, Gu, Poole, Categorical Reparameterization with Gumbel-Softmax, 2017
    (arXiv 1611.01144); Maddison, Mnih, Teh, The Concrete Distribution, 2017
    (arXiv 1611.00712).
  """

  def __init__(self, temperature=1.0, *, hard: bool = False, axis: int = -1,
               learn_temperature: bool = False, temperature_shape: tuple[int, ...] = (),
               min_temperature: float = 1e-3,
               deterministic: bool | None = None, eval_mode: str = "argmax",
               rng_collection: str = "gumbel", rngs: nnx.Rngs | nnx.RngStream | None = None):
    self._setup(temperature, hard=hard, axis=axis, learn_temperature=learn_temperature,
                temperature_shape=temperature_shape, min_temperature=min_temperature,
                deterministic=deterministic,
                eval_mode=eval_mode, rng_collection=rng_collection, rngs=rngs)

  def __call__(self, logits: ArrayLike, *, temperature=None, deterministic: bool | None = None,
               rngs: RngsLike = None) -> jax.Array:
    """Samples (training) or returns the deterministic value (evaluation).

    Args:
      logits: unnormalized log-probabilities, categories on ``axis``.
      temperature: overrides the fixed temperature for this call (not allowed
        with a learned one); may be traced, e.g. a schedule's value.
      deterministic: overrides the constructor's value.
      rngs: an ``nnx.Rngs``, ``nnx.RngStream`` or key; overrides the layer's stream.

    Returns:
      An array of the logits' shape and dtype.
    """
    det, tau, key = self._resolve(temperature, deterministic, rngs)
    return _layers.categorical(key, logits, tau, hard=self.hard, axis=self.axis,
                               deterministic=det, eval_mode=self.eval_mode)


class RelaxedBernoulli(_Stochastic):
  """Relaxed Bernoulli (Binary Concrete) layer: relaxed or straight-through bits.

  Training: ``gumbax.relaxed_bernoulli(key, logits, tau, hard=hard)``. Evaluation,
  by ``eval_mode``: ``"argmax"`` the hard threshold ``logits > 0`` (the mode) or
  ``"softmax"`` the noiseless ``sigmoid(logits / tau)``. Temperatures, ``rngs`` and
  ``deterministic`` work as in :class:`GumbelSoftmax` (there is no category axis: a
  temperature broadcasts against the logits' full shape).

  Args:
    temperature: positive temperature (initial value if learned).
    hard: straight-through: binary forward value, relaxed gradient.
    learn_temperature: make the temperature a parameter (``log_temperature``).
    temperature_shape: shape of the learned temperature.
    min_temperature: lower bound of the learned temperature.
    deterministic: evaluation mode if True; may be given per call instead.
    eval_mode: ``"argmax"`` (threshold) or ``"softmax"`` (sigmoid).
    rng_collection: the name of the rng stream.
    rngs: an ``nnx.Rngs`` or ``nnx.RngStream``.

  Example:
    >>> from flax import nnx
    >>> logits = jnp.zeros(3)
    >>> layer = gumbax.nnx.RelaxedBernoulli(2 / 3, rngs=nnx.Rngs(gumbel=0))
    >>> y = layer(logits, deterministic=False)
    >>> y.shape, bool(jnp.all((y > 0) & (y < 1)))
    ((3,), True)

  References:
    Maddison, Mnih, Teh, The Concrete Distribution, 2017 (arXiv 1611.00712).
  """

  def __init__(self, temperature=1.0, *, hard: bool = False, learn_temperature: bool = False,
               temperature_shape: tuple[int, ...] = (),
               min_temperature: float = 1e-3, deterministic: bool | None = None,
               eval_mode: str = "argmax", rng_collection: str = "gumbel",
               rngs: nnx.Rngs | nnx.RngStream | None = None):
    self._setup(temperature, hard=hard, axis=-1, learn_temperature=learn_temperature,
                temperature_shape=temperature_shape, min_temperature=min_temperature,
                deterministic=deterministic,
                eval_mode=eval_mode, rng_collection=rng_collection, rngs=rngs)

  def __call__(self, logits: ArrayLike, *, temperature=None, deterministic: bool | None = None,
               rngs: RngsLike = None) -> jax.Array:
    """Samples (training) or returns the deterministic value (evaluation).

    Args:
      logits: Bernoulli logits, any shape.
      temperature: overrides the fixed temperature for this call.
      deterministic: overrides the constructor's value.
      rngs: an ``nnx.Rngs``, ``nnx.RngStream`` or key.

    Returns:
      An array of the logits' shape and dtype, in [0, 1].
    """
    det, tau, key = self._resolve(temperature, deterministic, rngs)
    return _layers.bernoulli(key, logits, tau, hard=self.hard, deterministic=det,
                             eval_mode=self.eval_mode)


class CategoricalLatent(_Stochastic):
  """A categorical latent layer for VAEs: features -> logits -> sample and KL.

  An ``nnx.Linear`` (``dense``) maps features of shape ``batch + (in_features,)``
  to logits of shape ``batch + (num_latents, num_classes)``; the sample is drawn
  with the pathwise estimator named ``estimator`` (``"relaxed"``,
  ``"straight_through"``, ``"straight_through_gumbel"``, ``"gumbel_rao"``,
  ``"reinmax"``; hyperparameters in ``estimator_kwargs``) at the layer's
  temperature, and the KL divergence to the prior is returned with it:

  - ``prior="uniform"`` or ``"learned"`` (a parameter ``prior_logits`` of shape
    ``(num_latents, num_classes)``, starting uniform);
  - ``kl="analytic"``: the categorical KL ``sum_k q_k log(q_k / p_k)`` summed
    over latents; ``kl="relaxed"``: the single-sample ExpConcrete estimate
    ``log q(x) - log p(x)`` with ``x = log_gumbel_softmax(key, logits, tau)``
    drawn with the sample's own key (the same Gumbel noise: ``exp(x)`` is the
    relaxed version of the sample) and the prior relaxed at the same temperature.

  Evaluation mode returns the ``eval_mode`` value (``"argmax"`` one-hot or
  ``"softmax"``) and always the analytic KL (the relaxed estimate needs noise).

  Args:
    in_features: size of the input's last axis.
    num_latents: number of categorical variables N.
    num_classes: categories per variable K.
    estimator: a pathwise estimator's registry name.
    estimator_kwargs: its other hyperparameters, e.g. ``{"num_samples": 10}``.
    temperature: positive temperature (initial value if learned).
    learn_temperature: make the temperature a parameter (``log_temperature``).
    temperature_shape: its shape, e.g. ``(num_latents,)``.
    min_temperature: lower bound of the learned temperature.
    prior: ``"uniform"`` or ``"learned"``.
    kl: ``"analytic"`` or ``"relaxed"``.
    deterministic: evaluation mode if True; may be given per call instead.
    eval_mode: ``"argmax"`` or ``"softmax"``.
    rng_collection: the name of the rng stream for the sample.
    rngs: an ``nnx.Rngs`` (its ``params`` stream initializes ``dense``).

  Example:
    >>> from flax import nnx
    >>> features = jnp.ones((2, 16))                    # 2 examples, 16 features
    >>> latent = gumbax.nnx.CategoricalLatent(16, 4, 8, estimator="straight_through_gumbel",
    ...                                       rngs=nnx.Rngs(0))
    >>> out = latent(features, deterministic=False)
    >>> out.sample.shape, out.logits.shape, out.kl.shape  # 4 latents, 8 classes; a KL per row
    ((2, 4, 8), (2, 4, 8), (2,))

  References:
    Jang, Gu, Poole, Categorical Reparameterization with Gumbel-Softmax, 2017
    (arXiv 1611.01144); Maddison, Mnih, Teh, The Concrete Distribution, 2017
    (arXiv 1611.00712), section 3.3 (the relaxed KL).
  """

  def __init__(self, in_features: int, num_latents: int, num_classes: int, *,
               estimator: str = "relaxed", estimator_kwargs: dict | None = None,
               temperature=1.0, learn_temperature: bool = False,
               temperature_shape: tuple[int, ...] = (),
               min_temperature: float = 1e-3, prior: str = "uniform",
               kl: str = "analytic", deterministic: bool | None = None,
               eval_mode: str = "argmax", rng_collection: str = "gumbel",
               rngs: nnx.Rngs):
    _layers.check_latent(num_latents, num_classes, prior, kl)
    if not isinstance(rngs, nnx.Rngs):
      raise TypeError(
          f"`rngs` must be an nnx.Rngs (its 'params' stream initializes the dense layer); "
          f"got {type(rngs)}.")
    self._setup(temperature, hard=False, axis=-1, learn_temperature=learn_temperature,
                temperature_shape=temperature_shape, min_temperature=min_temperature,
                deterministic=deterministic,
                eval_mode=eval_mode, rng_collection=rng_collection, rngs=rngs)
    self.estimator = _layers.make_estimator(estimator, estimator_kwargs)
    self.num_latents = num_latents
    self.num_classes = num_classes
    self.prior = prior
    self.kl = kl
    self.dense = nnx.Linear(in_features, num_latents * num_classes, rngs=rngs)
    if prior == "learned":
      self.prior_logits = nnx.Param(jnp.zeros((num_latents, num_classes), jnp.float32))
    else:
      self.prior_logits = nnx.data(None)

  def __call__(self, x: ArrayLike, *, temperature=None, deterministic: bool | None = None,
               rngs: RngsLike = None) -> LatentOutput:
    """Maps features to logits, samples, and computes the KL to the prior.

    Args:
      x: features, shape ``batch + (in_features,)``.
      temperature: overrides the fixed temperature for this call (e.g. a schedule's
        value); not allowed with a learned temperature.
      deterministic: overrides the constructor's value.
      rngs: an ``nnx.Rngs``, ``nnx.RngStream`` or key.

    Returns:
      A :class:`LatentOutput` ``(sample, logits, kl)``: sample and logits of shape
      ``batch + (num_latents, num_classes)``, kl of shape ``batch``.
    """
    det, tau, key = self._resolve(temperature, deterministic, rngs)
    h = self.dense(jnp.asarray(x))
    logits = h.reshape(h.shape[:-1] + (self.num_latents, self.num_classes))
    if self.prior_logits is None:
      prior_logits = jnp.zeros((self.num_latents, self.num_classes), logits.dtype)
    else:
      prior_logits = self.prior_logits[...]
    return _layers.latent(key, logits, tau, estimator=self.estimator,
                          prior_logits=prior_logits, kl=self.kl, deterministic=det,
                          eval_mode=self.eval_mode)


class SubsetSelector(_Stochastic):
  """Selects ``k`` of ``n`` input features: the concrete autoencoder's selector layer.

  Input ``x`` of shape ``batch + (n,)``, output ``batch + (k,)``: the values of
  ``k`` selected features (the same contract for both methods), with learnable
  logits choosing which.

  - ``method="concrete"`` (default; Abid et al.): ``k`` selector nodes, each with
    its own ``n`` logits (the parameter ``logits`` of shape ``(k, n)``, initialized
    Glorot-normal as in Abid et al.'s implementation). In training each node draws a
    Concrete sample ``w_j = gumbel_softmax(key, logits_j, tau, hard=hard)`` over the
    features (one draw per call, shared by the batch) and outputs ``<w_j, x>``;
    ``hard=True`` is the straight-through version (exactly one feature per node).
    Nodes may pick the same feature.
  - ``method="top_k"``: one logit per feature (``logits`` of shape ``(n,)``,
    initialized to 0: every subset equally likely). In training,
    ``m = gumbax.relaxed_top_k(key, logits, k, tau, hard=hard)`` is a relaxed k-hot
    mask (Xie & Ermon) and the output is ``m * x`` at the ``k`` features of the drawn
    set (the support of the hard mask, i.e. ``gumbax.gumbel_top_k`` with the same
    key) in ascending feature order. The ``k`` features are always distinct, but
    which feature sits at output position ``j`` can change between draws until the
    selection has settled.

  Evaluation (``deterministic=True``) draws no noise and returns exactly
  ``x[..., selected_indices()]``: each node's argmax (``"concrete"``) or the ``k``
  largest logits in ascending feature order (``"top_k"``). Temperatures, ``rngs`` and
  ``deterministic`` work as in :class:`GumbelSoftmax`; Abid et al. anneal the
  temperature exponentially from 10 to 0.01 over training, e.g.
  ``gumbax.schedules.exponential_annealing(10.0, math.log(1000) / steps, 0.01, every=1)``
  passed as ``layer(x, temperature=schedule(step))``. A learned temperature may have
  shape ``(k,)`` (one per node) for ``"concrete"``, ``()`` for ``"top_k"``.

  Args:
    num_features: ``n``, the size of the input's last axis.
    num_selected: ``k``, the number of features to select, ``1 <= k <= n``.
    method: ``"concrete"`` or ``"top_k"``.
    temperature: positive temperature (initial value if learned).
    hard: straight-through: exact selections forward, relaxed gradient.
    learn_temperature: make the temperature a parameter (``log_temperature``).
    temperature_shape: shape of the learned temperature.
    min_temperature: lower bound of the learned temperature.
    deterministic: evaluation mode if True; may be given per call instead.
    rng_collection: the name of the rng stream for the noise.
    rngs: an ``nnx.Rngs`` (its ``params`` stream initializes ``logits``).

  Raises:
    ValueError: ``num_selected`` above ``num_features``, an unknown ``method``, or
      the arguments :class:`GumbelSoftmax` refuses.
    TypeError: non-integer sizes, or ``rngs`` that is not an ``nnx.Rngs``.

  Example:
    >>> from flax import nnx
    >>> x = jnp.arange(12.0).reshape(2, 6)             # 2 examples, 6 features
    >>> layer = gumbax.nnx.SubsetSelector(6, 3, temperature=0.5, rngs=nnx.Rngs(0))
    >>> layer(x, deterministic=False).shape            # 3 selected features
    (2, 3)
    >>> idx = layer.selected_indices()
    >>> bool(jnp.all(layer(x, deterministic=True) == x[:, idx]))
    True

  References:
    Abid, Balin, Zou, Concrete Autoencoders: Differentiable Feature Selection and
    Reconstruction, 2019 (arXiv 1901.09346); Xie, Ermon, Reparameterizable Subset
    Sampling via Continuous Relaxations, 2019 (arXiv 1901.10517).
  """

  def __init__(self, num_features: int, num_selected: int, *, method: str = "concrete",
               temperature=1.0, hard: bool = False, learn_temperature: bool = False,
               temperature_shape: tuple[int, ...] = (), min_temperature: float = 1e-3,
               deterministic: bool | None = None, rng_collection: str = "gumbel",
               rngs: nnx.Rngs):
    _layers.check_selector(num_selected, method, num_features)
    if not isinstance(rngs, nnx.Rngs):
      raise TypeError(
          f"`rngs` must be an nnx.Rngs (its 'params' stream initializes the logits); "
          f"got {type(rngs)}.")
    self._setup(temperature, hard=hard, axis=-1, learn_temperature=learn_temperature,
                temperature_shape=temperature_shape, min_temperature=min_temperature,
                deterministic=deterministic, eval_mode=None,
                rng_collection=rng_collection, rngs=rngs)
    self.num_features = num_features
    self.num_selected = num_selected
    self.method = method
    self.logits = nnx.Param(_layers.selector_logits_init(
        rngs.params(), method, num_features, num_selected))

  def selected_indices(self) -> jax.Array:
    """The ``k`` selected feature indices (int32): each node's argmax for
    ``"concrete"`` (in node order), the top ``k`` logits in ascending order for
    ``"top_k"``.

    Returns:
      An int32 array of shape ``(k,)``.
    """
    return _layers.selected_indices(self.logits[...], self.method, self.num_selected)

  def __call__(self, x: ArrayLike, *, temperature=None, deterministic: bool | None = None,
               rngs: RngsLike = None) -> jax.Array:
    """Selects features: relaxed (training) or exact (evaluation).

    Args:
      x: features, shape ``batch + (num_features,)``.
      temperature: overrides the fixed temperature for this call (e.g. a schedule's
        value); not allowed with a learned temperature.
      deterministic: overrides the constructor's value.
      rngs: an ``nnx.Rngs``, ``nnx.RngStream`` or key.

    Returns:
      The selected feature values, shape ``batch + (num_selected,)``.

    Raises:
      ValueError: ``x``'s last axis is not ``num_features`` long.
    """
    det, tau, key = self._resolve(temperature, deterministic, rngs)
    return _layers.select(key, self.logits[...], x, tau, method=self.method,
                          num_selected=self.num_selected, hard=self.hard, deterministic=det)
