"""What the runner needs from a task: parameters, batches, gradients, evaluation.

Every method is a pure function of its arguments (keys included), so the runner can
``jit`` it, ``vmap`` it over seeds and shard the batch over devices. Tasks with one
layer of discrete variables define ``model(params, batch) -> (logits, f)`` and inherit
:meth:`Task.gradients` (``gumbax.estimators.value_and_grads``); tasks with several
layers override :meth:`Task.init_cv` and :meth:`Task.gradients`.
"""

from __future__ import annotations

import abc
from typing import Any

import jax

import gumbax


class Task(abc.ABC):
  """A training problem for any registered estimator.

  Attributes:
    config: the task's schema object (``experiments.config.ToyTask`` etc.).
    batch_size: examples per step (the axis sharded over devices).
    eval_splits: the data splits :meth:`evaluate` accepts.
    sampled_eval: whether :meth:`evaluate` draws ``num_samples`` samples per example
      (its result depends on m); False for an exact evaluation.
    slope_annealing: whether the model divides its logits by the temperature (the
      config's ``temperature.slope``); only tasks with ``supports_slope_annealing``.
  """

  eval_splits: tuple[str, ...] = ()
  sampled_eval: bool = False
  supports_slope_annealing: bool = False

  def __init__(self, config, *, batch_size: int, data_config=None, slope_annealing: bool = False):
    if slope_annealing and not self.supports_slope_annealing:
      raise ValueError(f"the {config.name} task does not support slope annealing "
                       "(temperature.slope)")
    self.config = config
    self.batch_size = batch_size
    self.data_config = data_config
    self.slope_annealing = slope_annealing

  @property
  def distribution(self) -> str:
    return self.config.distribution

  @abc.abstractmethod
  def init(self, key: jax.Array) -> Any:
    """The model's initial parameters."""

  def data(self) -> Any:
    """Arrays the batches are drawn from (placed on the devices once); None if data-free."""
    return None

  def batch(self, key: jax.Array, step: jax.Array, data: Any) -> Any:
    """The training batch of ``step`` from ``data`` (leading axis ``batch_size``).

    ``key`` is the seed's data key, the same at every step: derive per-step
    randomness with ``jax.random.fold_in(key, step)``.
    """
    del key, step, data
    return None

  # Tasks with one stochastic layer define ``model(params, batch) -> (logits, f)``
  # (the input of ``gumbax.estimators.value_and_grads``); the two defaults below use
  # it. Tasks with several layers override both instead.

  def init_cv(self, estimator, key, params, batch) -> dict:
    """The estimator's control variate for this task."""
    return estimator.init(key, self.model(params, batch)[0])

  def gradients(self, estimator, key, params, cv, batch,
                temperature=None) -> gumbax.estimators.StepGradients:
    """The loss, the parameters' gradient estimate and the control variate's update.

    ``temperature`` is the step's scheduled temperature for an estimator with
    ``uses_temperature`` (the runner passes ``tau(step)``), None for the others;
    it is passed on to the estimator's calls.
    """
    return gumbax.estimators.value_and_grads(
        estimator, key, lambda p: self.model(p, batch), params, cv, temperature=temperature)

  def probe(self, estimator, key, params, cv, temperature=None) -> dict[str, jax.Array]:
    """Extra per-log metrics at the current parameters (e.g. exact loss); default none.
    ``temperature`` as for :meth:`gradients`."""
    del estimator, key, params, cv, temperature
    return {}

  def eval_samples(self, final: bool) -> int:
    """Importance samples per example for :meth:`evaluate` (during training / at the end)."""
    config = self.config
    return getattr(config, "final_eval_samples" if final else "eval_samples", 1)

  def evaluate(self, params, key: jax.Array, split: str, num_samples: int,
               final: bool, temperature: float = 1.0) -> dict[str, float]:
    """Evaluation metrics on ``split`` with ``num_samples`` importance samples (nats).

    ``temperature`` is the schedule's value at the last training step before the
    evaluation (``experiments.program.Program.evaluation_temperature``); only a model with
    slope annealing uses it (its logits are divided by it).
    """
    del params, key, split, num_samples, final, temperature
    return {}

  def artifacts(self, params) -> dict:
    """JSON-serializable results of the final parameters beyond the metrics (e.g. the
    pixels a feature selector chose); the runner writes them to the member folder as
    ``artifacts.json`` after the final evaluation, and the report plots the ones it
    knows. Default none."""
    del params
    return {}
