"""The estimator contract, the registry, and helpers shared by every estimator.

An estimator answers one question: an estimate of ``d/dtheta E_{b ~ p(logits)}[f(b)]``,
expressed as a *surrogate*: a JAX value whose forward value is the loss at the
sample(s) and whose ``jax.grad`` is the estimate, for the logits and for everything
``f`` closes over.

The sampling temperature of the pathwise estimators is a call argument,
``est(key, logits, f, cv, temperature=tau)`` (its default is the estimator's
``temperature`` field), so a schedule's ``tau(step)`` (a traced array under ``jit``)
reaches the sampler directly and a frozen estimator is never patched with
``dataclasses.replace``; ``uses_temperature`` declares which estimators take it.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp

from gumbax import _checks
from gumbax import _noise
from gumbax.gumbel import conditional_gumbel
from gumbax.gumbel import conditional_logistic
from gumbax.gumbel import one_hot_argmax
from gumbax.relaxed import sigmoid_scores
from gumbax.relaxed import softmax_scores

DISTRIBUTIONS = ("categorical", "bernoulli")
_REGISTRY: dict[str, type["Estimator"]] = {}


def register(cls: type["Estimator"]) -> type["Estimator"]:
  """Class decorator: adds an estimator to the registry under ``cls.name``."""
  if cls.name in _REGISTRY:
    raise ValueError(f"An estimator named {cls.name!r} is already registered.")
  _REGISTRY[cls.name] = cls
  return cls


def names(kind: type | None = None) -> list[str]:
  """The registered estimator names, sorted; with ``kind``, only those whose class is
  a subclass of ``kind`` (e.g. ``names(gumbax.estimators.Pathwise)``, the estimators
  that need no ``f``)."""
  if kind is None:
    return sorted(_REGISTRY)
  if not isinstance(kind, type):
    raise TypeError(f"`kind` must be a class (e.g. gumbax.estimators.Pathwise); got {kind!r}.")
  return sorted(name for name, cls in _REGISTRY.items() if issubclass(cls, kind))


def get(name: str, **hyperparameters: Any) -> "Estimator":
  """Returns the estimator registered as ``name`` with the given hyperparameters.

  Args:
    name: a registry name, e.g. ``"rloo"``; see :func:`names`.
    **hyperparameters: the estimator's dataclass fields, e.g. ``num_samples=4``.

  Returns:
    An :class:`Estimator` instance.

  Raises:
    ValueError: unknown name (the message lists the valid ones).
    TypeError: unknown hyperparameter (the message lists the valid ones).

  Example:
    >>> est = gumbax.estimators.get("rloo", num_samples=4)
    >>> est
    ReinforceLeaveOneOut(distribution='categorical', num_samples=4)

  The estimator contract (a surrogate whose ``jax.grad`` is the estimate) is stated
  in this module's docstring and in :class:`Estimator`.
  """
  if name not in _REGISTRY:
    raise ValueError(f"Unknown estimator {name!r}; valid names are {names()}.")
  cls = _REGISTRY[name]
  valid = [f.name for f in dataclasses.fields(cls)] + list(cls.deprecated_names)
  unknown = sorted(set(hyperparameters) - set(valid))
  if unknown:
    raise TypeError(
        f"Unknown hyperparameter(s) {unknown} for estimator {name!r}; valid ones are "
        f"{valid}.")
  return cls(**hyperparameters)


@dataclasses.dataclass(frozen=True)
class Estimator(abc.ABC):
  """Base class: an estimator of ``d/dtheta E_{b ~ p(logits)}[f(b)]``.

  Subclasses implement :meth:`surrogate`; :meth:`__call__` validates the inputs
  first. Hyperparameters are dataclass fields; every estimator takes
  ``distribution`` (``"categorical"``: logits ``batch + event + (K,)``, one-hot
  samples; ``"bernoulli"``: logits ``batch + event``, samples in {0, 1}).

  Class attributes document the estimator: ``unbiased``, ``evaluations`` (of ``f``
  per call), ``distributions`` (supported), ``reference`` (the paper),
  ``uses_temperature`` (whether it takes a sampling temperature).

  The temperature: an estimator with ``uses_temperature = True`` (the pathwise ones)
  has a ``temperature`` field, its default, and accepts ``temperature=tau`` at call
  time (:meth:`__call__`, :meth:`variance_loss`); a number or an array, concrete or
  traced (a schedule's ``tau(step)`` under ``jit``; ``jax.grad`` with respect to it
  works). That is how a temperature that changes every step reaches the sampler:
  as an argument, never by rebuilding the frozen estimator. An estimator with
  ``uses_temperature = False`` raises ``TypeError`` for a ``temperature`` that is not
  None rather than ignoring it: it has no sampling temperature, so a value passed
  there (say a schedule meant for a pathwise estimator) would silently change
  nothing, and a learned control-variate temperature (REBAR/RELAX's ``lambda``,
  field ``lambda_init``) is a parameter in ``cv``, not a call argument. Passing
  None (the default) is always accepted, so generic code can forward an optional
  temperature to any estimator.
  """

  name: ClassVar[str] = ""
  unbiased: ClassVar[bool] = False
  evaluations: ClassVar[str] = "1"
  distributions: ClassVar[tuple[str, ...]] = DISTRIBUTIONS
  reference: ClassVar[str] = ""
  uses_temperature: ClassVar[bool] = False
  # Old keyword -> new field name, accepted (with a DeprecationWarning) by the
  # constructor and by :func:`get`.
  deprecated_names: ClassVar[dict[str, str]] = {}

  distribution: str = "categorical"

  def __post_init__(self):
    if self.distribution not in DISTRIBUTIONS:
      raise ValueError(
          f"`distribution` must be one of {list(DISTRIBUTIONS)}; got {self.distribution!r}.")
    if self.distribution not in self.distributions:
      raise ValueError(
          f"Estimator {self.name!r} supports only {list(self.distributions)} variables; "
          f"got distribution={self.distribution!r}.")
    if self.uses_temperature:
      _checks.check_positive_static(self.temperature, "temperature")

  # -- the contract ------------------------------------------------------------

  def init(self, key: jax.Array, logits: jax.Array) -> dict:
    """Initial control-variate parameters and state: ``{"params": ..., "state": ...}``.

    Empty (``{}``) for estimators without control variates.
    """
    del key, logits
    return {}

  def __call__(self, key: jax.Array, logits: jax.Array, f: Callable[[jax.Array], jax.Array],
               cv: dict | None = None, *, temperature=None) -> jax.Array:
    """The surrogate: forward value is the loss at the sample(s), ``grad`` the estimate.

    Args:
      key: a PRNG key.
      logits: the distribution's logits (see the class docstring for the layout).
      f: maps a sample of the logits' shape to one value per example (its output
        shape is a prefix of the sample's shape).
      cv: control-variate parameters and state from :meth:`init` (or updated).
      temperature: the sampling temperature of this call (estimators with
        ``uses_temperature``); None: the ``temperature`` field.

    Returns:
      An array of ``f``'s output shape.

    Raises:
      TypeError: ``temperature`` is not None for an estimator without a sampling
        temperature.
    """
    options = self._temperature_options(temperature)
    logits = self._check_logits(logits)
    cv = {} if cv is None else cv
    if self.needs_cv and not cv:
      raise ValueError(
          f"Estimator {self.name!r} needs its control variate: pass "
          "`cv = est.init(key, logits)` (and keep the one returned by training).")
    return self.surrogate(key, logits, f, cv, **options)

  def _temperature_options(self, temperature) -> dict:
    """The keyword arguments :meth:`surrogate` takes for a call-time ``temperature``:
    ``{"temperature": tau}`` (the field when None) or ``{}``; raises ``TypeError``
    for a temperature given to an estimator that has none."""
    if not self.uses_temperature:
      if temperature is not None:
        raise TypeError(
            f"Estimator {self.name!r} has no sampling temperature (uses_temperature is "
            f"False); do not pass `temperature` (got {temperature!r}). Only the pathwise "
            "estimators take one"
            + ("; the initial temperature lambda of the control variate is the "
               "`lambda_init` field." if "lambda_init" in self.__dataclass_fields__ else "."))
      return {}
    if temperature is None:
      return {"temperature": self.temperature}
    _checks.check_positive_static(temperature, "temperature")
    return {"temperature": temperature}

  @property
  def needs_cv(self) -> bool:
    """Whether :meth:`__call__` needs the ``cv`` that :meth:`init` returns."""
    return False

  @abc.abstractmethod
  def surrogate(self, key, logits, f, cv) -> jax.Array:
    """The surrogate for validated logits; what each estimator defines. Estimators
    with ``uses_temperature`` take a keyword ``temperature`` as well (never None)."""

  def update(self, cv: dict, logits: jax.Array, loss: jax.Array) -> dict:
    """New non-trainable control-variate state (e.g. moving averages), functionally.

    Args:
      cv: the current control variate.
      logits: the logits of the step.
      loss: the surrogate's forward value at the step.

    Returns:
      ``cv`` with its ``"state"`` updated; unchanged for most estimators.
    """
    del logits, loss
    return cv

  def variance_loss(self, key: jax.Array, logits: jax.Array, f, cv: dict, *,
                    temperature=None) -> jax.Array:
    """Single-sample estimate of the estimator's variance (up to a constant in phi).

    ``sum(g ** 2)`` with ``g`` the estimate for the logits; its gradient with respect
    to ``cv["params"]`` is an unbiased estimate of ``d Var[g] / d phi`` (the mean of
    ``g`` does not depend on ``phi`` for an unbiased estimator). ``temperature`` is
    as for :meth:`__call__`.

    References:
      Grathwohl et al., Backpropagation through the Void, 2018 (arXiv 1711.00123).
    """
    options = self._temperature_options(temperature)
    logits = jax.lax.stop_gradient(self._check_logits(logits))
    g = jax.grad(lambda l: jnp.sum(self.surrogate(key, l, f, cv, **options)))(logits)
    return jnp.sum(jnp.square(g))

  # -- helpers for subclasses --------------------------------------------------

  @property
  def categorical(self) -> bool:
    return self.distribution == "categorical"

  def _check_logits(self, logits) -> jax.Array:
    logits, _ = _checks.as_logits(logits)
    if self.categorical and logits.ndim == 0:
      raise ValueError(
          "Categorical `logits` need a trailing category axis, shape batch + event + (K,); "
          "got a scalar. For a Bernoulli variable pass distribution='bernoulli'.")
    return logits

  def noise(self, key, logits) -> jax.Array:
    """Gumbel (categorical) or logistic (Bernoulli) noise in the compute dtype."""
    cdtype = _checks.compute_dtype(logits.dtype)
    if self.categorical:
      return _noise.draw(jax.random.gumbel, key, logits.shape, cdtype, mode="low")
    return _noise.draw(jax.random.logistic, key, logits.shape, cdtype)

  def perturb(self, key, logits) -> jax.Array:
    """``z = logits + noise`` in the compute dtype; ``H(z)`` is an exact sample."""
    return logits.astype(_checks.compute_dtype(logits.dtype)) + self.noise(key, logits)

  def harden(self, z) -> jax.Array:
    """``H(z)``: the one-hot argmax (all NaN on a degenerate row, as for
    :func:`gumbax.gumbel_max`) or the sign indicator, no gradient."""
    z = jax.lax.stop_gradient(z)
    if self.categorical:
      return one_hot_argmax(z, -1, z.dtype)
    return (z > 0).astype(z.dtype)

  def sample(self, key, logits) -> jax.Array:
    """An exact sample of the logits' distribution (compute dtype, no gradient)."""
    return self.harden(self.perturb(key, jax.lax.stop_gradient(logits)))

  def conditional(self, key, logits, b) -> jax.Array:
    """``z~ ~ p(z | H(z) = b)``, reparameterized in the logits (compute dtype)."""
    cdtype = _checks.compute_dtype(logits.dtype)
    logits = logits.astype(cdtype)
    if self.categorical:
      return conditional_gumbel(key, logits, b)
    return conditional_logistic(key, logits, b)

  def relax(self, z, temperature) -> jax.Array:
    """``softmax(z / tau)`` or ``sigmoid(z / tau)``, NaN-free."""
    return softmax_scores(z, temperature, -1) if self.categorical else sigmoid_scores(z, temperature)

  def mean(self, logits) -> jax.Array:
    """``E[b]``: ``softmax(logits)`` or ``sigmoid(logits)``, compute dtype."""
    return self.relax(logits.astype(_checks.compute_dtype(logits.dtype)), 1.0)

  def log_prob(self, b, logits, ndim: int) -> jax.Array:
    """``log p(b)`` summed over all but the first ``ndim`` (batch) dimensions."""
    l = logits.astype(_checks.compute_dtype(logits.dtype))
    if self.categorical:
      logp = jnp.sum(jnp.where(b > 0, jax.nn.log_softmax(l, axis=-1), 0.0), axis=-1)
    else:
      logp = jnp.where(b > 0, jax.nn.log_sigmoid(l), jax.nn.log_sigmoid(-l))
    return jnp.sum(logp, axis=tuple(range(ndim, logp.ndim)))

  def out_ndim(self, f, sample) -> int:
    """Checks ``f``'s output shape against the sample's; returns its rank."""
    out = jax.eval_shape(f, jax.ShapeDtypeStruct(sample.shape, sample.dtype))
    event_limit = sample.ndim - 1 if self.categorical else sample.ndim
    if (not isinstance(out, jax.ShapeDtypeStruct) or out.ndim > event_limit
        or tuple(out.shape) != tuple(sample.shape[:out.ndim])):
      got = out.shape if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
      raise ValueError(
          f"`f` must return one value per example: an array whose shape is a prefix of "
          f"the sample's shape {tuple(sample.shape)}"
          f"{' without its category axis' if self.categorical else ''}; got {got}.")
    if not jnp.issubdtype(out.dtype, jnp.floating):
      raise TypeError(f"`f` must return floating-point values; got dtype {out.dtype}.")
    return out.ndim


@dataclasses.dataclass(frozen=True)
class MeanFieldLoss:
  """A loss ``f`` together with a deterministic mean-field version of it.

  Calling it calls ``f``; every estimator sees ``f``. :class:`MuProp` expands its
  Taylor control variate around ``mean_field(mu)`` instead of ``f(mu)`` (its
  ``mean_field`` option). Use it when ``f`` is itself stochastic, e.g. a layer of a
  sigmoid belief network whose ``f`` samples the layers above: there
  ``mean_field`` propagates means (``sigmoid`` / ``softmax`` of the logits) instead
  of samples, as in Gu et al.'s mean-field network. Any ``mean_field`` that does
  not depend on the sample keeps MuProp unbiased; the closer it tracks ``f``, the
  lower the variance.

  Attributes:
    f: the loss, ``b -> one value per example``.
    mean_field: a deterministic function of the same signature, evaluated at the
      mean ``mu``.

  Example:
    >>> key, k_h = jax.random.split(jax.random.key(0))
    >>> logits, w, x = jnp.zeros((2, 3)), jnp.array([1.0, -1.0, 0.5]), jnp.array([1.0, 0.0])
    >>> def sampled_loss(b):  # samples a unit h ~ Bernoulli(sigmoid(b @ w)) above b
    ...   return (jax.random.bernoulli(k_h, jax.nn.sigmoid(b @ w)) - x) ** 2
    >>> mean_field_loss = lambda b: (jax.nn.sigmoid(b @ w) - x) ** 2  # h's mean instead
    >>> loss = gumbax.estimators.MeanFieldLoss(sampled_loss, mean_field_loss)
    >>> est = gumbax.estimators.get("muprop")
    >>> surrogate = est(key, logits, loss)
    >>> surrogate.shape, jax.grad(lambda l: jnp.sum(est(key, l, loss)))(logits).shape
    ((2,), (2, 3))

  References:
    Gu, Levine, Sutskever, Mnih, MuProp: Unbiased Backpropagation for Stochastic
    Neural Networks, 2016 (arXiv 1511.05176), section 3.
  """

  f: Callable[[jax.Array], jax.Array]
  mean_field: Callable[[jax.Array], jax.Array]

  def __post_init__(self):
    for name in ("f", "mean_field"):
      if not callable(getattr(self, name)):
        raise TypeError(f"`{name}` must be callable; got {getattr(self, name)!r}.")

  def __call__(self, b: jax.Array) -> jax.Array:
    return self.f(b)


def detach(f: Callable, example: jax.Array) -> Callable:
  """``f`` with every array it closes over cut from differentiation.

  Control variates evaluate ``f`` at relaxed points; their gradients with respect to
  the parameters ``f`` closes over (a decoder) have mean zero, so they are dropped
  instead of adding noise to the model's gradient.
  """
  converted, consts = jax.closure_convert(f, example)
  consts = [jax.lax.stop_gradient(c) for c in consts]
  return lambda b: converted(b, *consts)


def score_term(signal, logp) -> jax.Array:
  """A zero-valued term whose gradient is ``signal * grad log p`` (signal is constant
  with respect to the logits)."""
  return signal * (logp - jax.lax.stop_gradient(logp))


def zero_valued(x) -> jax.Array:
  """``x - stop_gradient(x)``: zero forward, ``x``'s gradient backward."""
  return x - jax.lax.stop_gradient(x)




__all__ = ["Estimator", "MeanFieldLoss", "get", "names", "register"]
