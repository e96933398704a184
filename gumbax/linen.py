"""Flax linen layers: discrete bottlenecks that behave like ``flax.linen.Dropout``.

The same layers as :mod:`gumbax.nnx`, with the same constructor arguments (less
``rngs``, and ``CategoricalLatent`` infers its input size), the same parameter names
and identical outputs for the same key and parameters. The noise comes from the rng
collection ``rng_collection`` (``"gumbel"`` by default):
``model.apply(variables, x, rngs={"gumbel": key})``. ``deterministic`` is settable
at construction and at call time (the call-time value wins).

During ``init``, a training-mode call without a ``"gumbel"`` key uses the
``"params"`` key (as linen's ``make_rng`` does); during ``apply`` a missing stream is
an error rather than a silent fallback.
"""

from __future__ import annotations

from typing import Any

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gumbax import _layers
from gumbax._layers import LatentOutput

__all__ = ["CategoricalLatent", "GumbelSoftmax", "LatentOutput", "RelaxedBernoulli",
           "SubsetSelector"]


class _Stochastic(nn.Module):
  """Shared plumbing: rng collection, ``deterministic`` switch and temperature."""

  def _check(self, hard: bool, axis: int, eval_mode: str | None) -> None:
    _layers.check_common(type(self).__name__, self.temperature, hard, axis,
                         self.learn_temperature, self.temperature_shape, self.min_temperature,
                         self.deterministic, eval_mode, self.rng_collection)

  def _resolve(self, temperature, deterministic, rng):
    """(deterministic, temperature, key) for one call; the key is None if unused."""
    name = type(self).__name__
    det = _layers.resolve_deterministic(name, "linen", self.deterministic, deterministic)
    log_tau = None
    if self.learn_temperature:
      log_tau = self.param(
          "log_temperature",
          lambda _, shape: _layers.initial_log_temperature(self.temperature, shape),
          self.temperature_shape)
    tau = _layers.resolve_temperature(name, self.temperature, log_tau, temperature,
                                      self.min_temperature)
    return det, tau, (None if det else self._key(rng))

  def _key(self, rng) -> jax.Array:
    if rng is not None:
      return rng
    name, collection = type(self).__name__, self.rng_collection
    if not self.has_rng(collection) and not self.is_initializing():
      raise _layers.missing_rng_error(
          name, "linen", collection, f"`apply` received no {collection!r} rng")
    try:
      return self.make_rng(collection)
    except flax.errors.InvalidRngError:
      raise _layers.missing_rng_error(
          name, "linen", collection,
          f"`init` received neither a {collection!r} nor a 'params' rng") from None


class GumbelSoftmax(_Stochastic):
  """Gumbel-softmax (Concrete) layer: relaxed or straight-through one-hot samples.

  Training (``deterministic=False``): ``gumbax.gumbel_softmax(key, logits, tau,
  hard=hard, axis=axis)``. Evaluation: ``eval_mode="argmax"`` gives the exact one-hot
  of ``argmax(logits)``, ``"softmax"`` the noiseless ``softmax(logits / tau)``. A
  learned temperature is the parameter ``log_temperature`` (shape
  ``temperature_shape``, starting at ``log(temperature)``); the temperature is
  ``exp(log_temperature)`` clamped to ``[min_temperature, e^80]`` in the forward pass
  only, so it is always positive. See :class:`gumbax.nnx.GumbelSoftmax`.

  Attributes:
    temperature: positive temperature (initial value if learned).
    hard: straight-through: one-hot forward value, relaxed gradient.
    axis: the category axis.
    learn_temperature: make the temperature a parameter.
    temperature_shape: shape of the learned temperature (``()``: one scalar).
    min_temperature: lower bound of the learned temperature.
    deterministic: evaluation mode if True; may be left None and given per call.
    eval_mode: ``"argmax"`` or ``"softmax"``.
    rng_collection: the rng collection to draw keys from.

  Example:
    >>> key, logits = jax.random.key(0), jnp.zeros((2, 3))  # 2 examples, 3 classes
    >>> layer = gumbax.linen.GumbelSoftmax(0.5, hard=True)
    >>> y = layer.apply({}, logits, deterministic=False, rngs={"gumbel": key})
    >>> y.shape, y.sum(axis=-1).tolist()                # one-hot rows
    ((2, 3), [1.0, 1.0])

  References:
    Jang, Gu, Poole, Categorical Reparameterization with Gumbel-Softmax, 2017
    (arXiv 1611.01144); Maddison, Mnih, Teh, The Concrete Distribution, 2017
    (arXiv 1611.00712).
  """

  temperature: Any = 1.0
  hard: bool = False
  axis: int = -1
  learn_temperature: bool = False
  temperature_shape: tuple[int, ...] = ()
  min_temperature: float = 1e-3
  deterministic: bool | None = None
  eval_mode: str = "argmax"
  rng_collection: str = "gumbel"

  def __post_init__(self):
    self._check(self.hard, self.axis, self.eval_mode)
    super().__post_init__()

  @nn.compact
  def __call__(self, logits: ArrayLike, *, temperature=None, deterministic: bool | None = None,
               rng: jax.Array | None = None) -> jax.Array:
    """Samples (training) or returns the deterministic value (evaluation).

    Args:
      logits: unnormalized log-probabilities, categories on ``axis``.
      temperature: overrides the fixed temperature for this call.
      deterministic: overrides the constructor's value.
      rng: a key to use instead of the rng collection.

    Returns:
      An array of the logits' shape and dtype.
    """
    det, tau, key = self._resolve(temperature, deterministic, rng)
    return _layers.categorical(key, logits, tau, hard=self.hard, axis=self.axis,
                               deterministic=det, eval_mode=self.eval_mode)


class RelaxedBernoulli(_Stochastic):
  """Relaxed Bernoulli (Binary Concrete) layer: relaxed or straight-through bits.

  Training: ``gumbax.relaxed_bernoulli(key, logits, tau, hard=hard)``. Evaluation:
  ``eval_mode="argmax"`` thresholds ``logits > 0``; ``"softmax"`` gives
  ``sigmoid(logits / tau)``. See :class:`gumbax.nnx.RelaxedBernoulli`.

  Attributes:
    temperature: positive temperature (initial value if learned).
    hard: straight-through: binary forward value, relaxed gradient.
    learn_temperature: make the temperature a parameter (``log_temperature``).
    temperature_shape: shape of the learned temperature.
    min_temperature: lower bound of the learned temperature.
    deterministic: evaluation mode if True; may be given per call instead.
    eval_mode: ``"argmax"`` (threshold) or ``"softmax"`` (sigmoid).
    rng_collection: the rng collection to draw keys from.

  Example:
    >>> key, logits = jax.random.key(0), jnp.zeros(3)
    >>> y = gumbax.linen.RelaxedBernoulli(2 / 3).apply(
    ...     {}, logits, deterministic=False, rngs={"gumbel": key})
    >>> y.shape, bool(jnp.all((y > 0) & (y < 1)))
    ((3,), True)

  References:
    Maddison, Mnih, Teh, The Concrete Distribution, 2017 (arXiv 1611.00712).
  """

  temperature: Any = 1.0
  hard: bool = False
  learn_temperature: bool = False
  temperature_shape: tuple[int, ...] = ()
  min_temperature: float = 1e-3
  deterministic: bool | None = None
  eval_mode: str = "argmax"
  rng_collection: str = "gumbel"

  def __post_init__(self):
    self._check(self.hard, -1, self.eval_mode)
    super().__post_init__()

  @nn.compact
  def __call__(self, logits: ArrayLike, *, temperature=None, deterministic: bool | None = None,
               rng: jax.Array | None = None) -> jax.Array:
    """Samples (training) or returns the deterministic value (evaluation).

    Args:
      logits: Bernoulli logits, any shape.
      temperature: overrides the fixed temperature for this call.
      deterministic: overrides the constructor's value.
      rng: a key to use instead of the rng collection.

    Returns:
      An array of the logits' shape and dtype, in [0, 1].
    """
    det, tau, key = self._resolve(temperature, deterministic, rng)
    return _layers.bernoulli(key, logits, tau, hard=self.hard, deterministic=det,
                             eval_mode=self.eval_mode)


class CategoricalLatent(_Stochastic):
  """A categorical latent layer for VAEs: features -> logits -> sample and KL.

  A ``Dense`` layer (named ``dense``) maps features to logits of shape
  ``batch + (num_latents, num_classes)``; the sample is drawn with the pathwise
  estimator ``estimator`` and returned with the logits and the KL to a uniform or
  learned (``prior_logits``) prior, analytic or the relaxed ExpConcrete estimate.
  Everything is as in :class:`gumbax.nnx.CategoricalLatent`, whose docstring has
  the details.

  Attributes:
    num_latents: number of categorical variables N.
    num_classes: categories per variable K.
    estimator: a pathwise estimator's registry name (``"relaxed"``,
      ``"straight_through"``, ``"straight_through_gumbel"``, ``"gumbel_rao"``,
      ``"reinmax"``).
    estimator_kwargs: its other hyperparameters, e.g. ``{"num_samples": 10}``.
    temperature: positive temperature (initial value if learned).
    learn_temperature: make the temperature a parameter (``log_temperature``).
    temperature_shape: its shape, e.g. ``(num_latents,)``.
    min_temperature: lower bound of the learned temperature.
    prior: ``"uniform"`` or ``"learned"``.
    kl: ``"analytic"`` or ``"relaxed"``.
    deterministic: evaluation mode if True; may be given per call instead.
    eval_mode: ``"argmax"`` or ``"softmax"``.
    rng_collection: the rng collection to draw keys from.

  Example:
    >>> key, features = jax.random.key(0), jnp.ones((2, 16))  # 2 examples, 16 features
    >>> latent = gumbax.linen.CategoricalLatent(4, 8, estimator="reinmax")
    >>> variables = latent.init(key, features, deterministic=True)
    >>> out = latent.apply(variables, features, deterministic=False,
    ...                    rngs={"gumbel": key})
    >>> out.sample.shape, out.logits.shape, out.kl.shape  # 4 latents, 8 classes; a KL per row
    ((2, 4, 8), (2, 4, 8), (2,))

  References:
    Jang, Gu, Poole, Categorical Reparameterization with Gumbel-Softmax, 2017
    (arXiv 1611.01144); Maddison, Mnih, Teh, The Concrete Distribution, 2017
    (arXiv 1611.00712), section 3.3 (the relaxed KL).
  """

  num_latents: int
  num_classes: int
  estimator: str = "relaxed"
  estimator_kwargs: Any = None
  temperature: Any = 1.0
  learn_temperature: bool = False
  temperature_shape: tuple[int, ...] = ()
  min_temperature: float = 1e-3
  prior: str = "uniform"
  kl: str = "analytic"
  deterministic: bool | None = None
  eval_mode: str = "argmax"
  rng_collection: str = "gumbel"

  def __post_init__(self):
    _layers.check_latent(self.num_latents, self.num_classes, self.prior, self.kl)
    self._check(False, -1, self.eval_mode)
    _layers.make_estimator(self.estimator, self.estimator_kwargs)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: ArrayLike, *, temperature=None, deterministic: bool | None = None,
               rng: jax.Array | None = None) -> LatentOutput:
    """Maps features to logits, samples, and computes the KL to the prior.

    Args:
      x: features, shape ``batch + (in_features,)``.
      temperature: overrides the fixed temperature for this call.
      deterministic: overrides the constructor's value.
      rng: a key to use instead of the rng collection.

    Returns:
      A :class:`LatentOutput` ``(sample, logits, kl)``.
    """
    det, tau, key = self._resolve(temperature, deterministic, rng)
    n, k = self.num_latents, self.num_classes
    h = nn.Dense(n * k, name="dense")(jnp.asarray(x))
    logits = h.reshape(h.shape[:-1] + (n, k))
    if self.prior == "learned":
      prior_logits = self.param("prior_logits", nn.initializers.zeros_init(), (n, k), jnp.float32)
    else:
      prior_logits = jnp.zeros((n, k), logits.dtype)
    estimator = _layers.make_estimator(self.estimator, self.estimator_kwargs)
    return _layers.latent(key, logits, tau, estimator=estimator, prior_logits=prior_logits,
                          kl=self.kl, deterministic=det, eval_mode=self.eval_mode)


class SubsetSelector(_Stochastic):
  """Selects ``k`` of ``n`` input features: the concrete autoencoder's selector layer.

  Input ``batch + (n,)`` (``n`` is inferred at ``init``), output ``batch + (k,)``, the
  selected feature values. ``method="concrete"`` (Abid et al.: ``k`` nodes with
  Glorot-normal logits ``(k, n)``, each a Gumbel-softmax sample over the features)
  or ``"top_k"`` (logits ``(n,)`` starting at 0; ``gumbax.relaxed_top_k``'s relaxed
  k-hot mask times ``x`` at the drawn set, ascending). Evaluation returns exactly
  ``x[..., selected_indices]``; ``layer.apply(variables, method="selected_indices")``
  gives the indices. Everything is as in :class:`gumbax.nnx.SubsetSelector`, whose
  docstring has the details; the parameter is named ``logits`` in both APIs.

  Attributes:
    num_selected: ``k``, the number of features to select.
    method: ``"concrete"`` or ``"top_k"``.
    temperature: positive temperature (initial value if learned).
    hard: straight-through: exact selections forward, relaxed gradient.
    learn_temperature: make the temperature a parameter (``log_temperature``).
    temperature_shape: shape of the learned temperature (``(k,)`` allowed for
      ``"concrete"``).
    min_temperature: lower bound of the learned temperature.
    deterministic: evaluation mode if True; may be given per call instead.
    rng_collection: the rng collection to draw keys from.

  Example:
    >>> key, x = jax.random.key(0), jnp.arange(12.0).reshape(2, 6)  # 6 features
    >>> layer = gumbax.linen.SubsetSelector(3, temperature=0.5)
    >>> variables = layer.init(key, x, deterministic=True)
    >>> y = layer.apply(variables, x, deterministic=False, rngs={"gumbel": key})
    >>> idx = layer.apply(variables, method="selected_indices")
    >>> y.shape, bool(jnp.all(layer.apply(variables, x, deterministic=True) == x[:, idx]))
    ((2, 3), True)

  References:
    Abid, Balin, Zou, Concrete Autoencoders: Differentiable Feature Selection and
    Reconstruction, 2019 (arXiv 1901.09346); Xie, Ermon, Reparameterizable Subset
    Sampling via Continuous Relaxations, 2019 (arXiv 1901.10517).
  """

  num_selected: int
  method: str = "concrete"
  temperature: Any = 1.0
  hard: bool = False
  learn_temperature: bool = False
  temperature_shape: tuple[int, ...] = ()
  min_temperature: float = 1e-3
  deterministic: bool | None = None
  rng_collection: str = "gumbel"

  def __post_init__(self):
    _layers.check_selector(self.num_selected, self.method)
    self._check(self.hard, -1, None)
    super().__post_init__()

  def selected_indices(self) -> jax.Array:
    """The ``k`` selected feature indices (int32 ``(k,)``): each node's argmax for
    ``"concrete"``, the top ``k`` logits in ascending order for ``"top_k"``.

    Returns:
      An int32 array of shape ``(k,)``.
    """
    return _layers.selected_indices(self.variables["params"]["logits"], self.method,
                                    self.num_selected)

  @nn.compact
  def __call__(self, x: ArrayLike, *, temperature=None, deterministic: bool | None = None,
               rng: jax.Array | None = None) -> jax.Array:
    """Selects features: relaxed (training) or exact (evaluation).

    Args:
      x: features, shape ``batch + (n,)``.
      temperature: overrides the fixed temperature for this call.
      deterministic: overrides the constructor's value.
      rng: a key to use instead of the rng collection.

    Returns:
      The selected feature values, shape ``batch + (num_selected,)``.

    Raises:
      ValueError: ``num_selected`` above ``n``, or ``x``'s last axis does not match
        the parameters.
    """
    x = jnp.asarray(x)
    if x.ndim == 0:
      raise ValueError("SubsetSelector's input must have a feature axis; got a scalar.")
    num_features = x.shape[-1]
    if self.has_variable("params", "logits"):
      _layers.check_features("SubsetSelector", x,
                             self.get_variable("params", "logits").shape[-1])
    else:
      _layers.check_selector(self.num_selected, self.method, num_features)
    logits = self.param(
        "logits", lambda key: _layers.selector_logits_init(
            key, self.method, num_features, self.num_selected))
    det, tau, key = self._resolve(temperature, deterministic, rng)
    return _layers.select(key, logits, x, tau, method=self.method,
                          num_selected=self.num_selected, hard=self.hard, deterministic=det)
