"""A member's program: estimator, temperature schedule, optimizers, keys and jitted steps.

Every command that trains or measures a model builds it here, so they agree on
what a config means: ``python -m experiments run`` (:mod:`experiments.runner`)
trains with :class:`Program`, ``variance`` (:mod:`experiments.variance`) trains its
reference run and measures estimators with it, ``evaluate``
(:mod:`experiments.evaluate`) repeats a final evaluation with its key and
temperature, and ``layer-variance`` (:mod:`experiments.layer_variance`) builds a
member's estimator with :func:`build_estimator`.

The temperature's path: the config's ``temperature`` section gives a schedule
(:func:`temperature_schedule`); at every step the program evaluates it,
``tau = schedule(step)``, and passes ``tau`` as an argument to
``task.gradients(estimator, key, params, cv, batch, tau)``, which passes it to the
estimator call ``estimator(key, logits, f, cv, temperature=tau)`` and on to the
sampler. Only estimators that declare ``uses_temperature`` get it; REBAR's and
RELAX's learned temperature is a control-variate parameter that starts at the
schedule's ``init`` (their ``lambda_init``).

Keys: every random number of a member derives from its seed's key, split into the
named streams of :class:`Stream` and then folded with the step, so a resumed
member draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gumbax
from experiments.config import Config

__all__ = ["Program", "Stream", "build_estimator", "evaluation_key", "learns_temperature",
           "optimizer", "stream", "temperature_schedule"]


class Stream(enum.IntEnum):
  """The key streams of a seed: ``stream(seed_key, Stream.X)`` is ``fold_in(seed_key, X)``.

  The values are part of the results: changing one changes every number drawn from it.
  """
  INIT = 0          #: parameters and control variate at step 0
  GRADIENT = 1      #: the estimator's noise at each training step (folded with the step)
  PROBE = 2         #: the task's probe metrics logged with the training loss
  EVALUATION = 3    #: evaluations (folded with the step and the split)
  BATCH = 4         #: the training batch of each step
  STUDY = 7         #: a variance study's measurements (folded with the checkpoint's step)
  STUDY_BATCH = 99  #: a variance study's fixed batch


def stream(seed_key: jax.Array, which: Stream) -> jax.Array:
  """The key of stream ``which`` of ``seed_key``."""
  return jax.random.fold_in(seed_key, int(which))


def evaluation_key(seed_key: jax.Array, step: int, split: str) -> jax.Array:
  """The key of the evaluation of ``split`` after ``step`` steps; ``python -m
  experiments evaluate`` uses it to repeat a final evaluation."""
  return jax.random.fold_in(jax.random.fold_in(stream(seed_key, Stream.EVALUATION), step),
                            len(split))


def temperature_schedule(config: Config):
  """The config's temperature section as a ``gumbax.schedules`` schedule ``step -> tau``."""
  t = config.temperature
  if t.schedule == "constant":
    return gumbax.schedules.constant(t.init)
  if t.schedule == "exponential":
    return gumbax.schedules.exponential_annealing(t.init, t.rate, t.final, t.every)
  steps = t.steps or config.train.steps
  if t.schedule == "linear":
    return gumbax.schedules.linear(t.init, t.final, steps)
  return gumbax.schedules.cosine(t.init, t.final, steps)


def optimizer(config: Config, learning_rate: float):
  """``(optax transformation, learning-rate schedule)`` of the config's optimizer at
  ``learning_rate`` (staircase exponential decay by ``decay_rate`` every ``decay_steps``)."""
  o = config.optimizer
  schedule = optax.exponential_decay(learning_rate, o.decay_steps, o.decay_rate, staircase=True)
  if o.name == "adam":
    return optax.adam(schedule), schedule
  return optax.sgd(schedule, momentum=o.momentum), schedule


def learns_temperature(estimator_name: str) -> bool:
  """Whether the estimator learns a control-variate temperature (REBAR and RELAX:
  their ``lambda_init`` field), which starts at the config's ``temperature.init``."""
  cls = type(gumbax.estimators.get(estimator_name))
  return "lambda_init" in {f.name for f in dataclasses.fields(cls)}


def build_estimator(config: Config):
  """The config's estimator. A sampling temperature is not part of it (the program
  passes the schedule's ``tau(step)`` to every call); REBAR's and RELAX's learned
  temperature starts at ``temperature.init`` (their ``lambda_init``)."""
  spec = config.estimator
  options = dict(spec.options)
  if learns_temperature(spec.name):
    options["lambda_init"] = config.temperature.init
  return gumbax.estimators.get(spec.name, distribution=config.task.distribution, **options)


@dataclasses.dataclass
class Program:
  """The jitted functions of one member group (members that differ only by seed).

  Attributes set from ``config``: ``estimator``, ``tau`` (the temperature schedule),
  ``uses_temperature`` (the estimator's declaration), ``opt`` and ``lr`` (the
  optimizer and its learning-rate schedule), ``cv_opt`` (the control variate's
  optimizer); and the jitted, seed-vectorized ``init(seed_keys, data)``,
  ``chunk(state, seed_keys, start, length, data)`` (``length`` training steps as one
  ``lax.scan``) and ``probe(state, seed_keys, step, data)``.

  Args:
    config: one member's config (no sweep).
    task: the task built from it (``experiments.tasks.make_task``).
    mesh: the devices; the batch axis is sharded over its ``"data"`` axis.
  """
  config: Config
  task: Any
  mesh: Mesh

  def __post_init__(self):
    c = self.config
    self.estimator = build_estimator(c)
    self.uses_temperature = self.estimator.uses_temperature
    self.tau = temperature_schedule(c)
    self.opt, self.lr = optimizer(c, c.optimizer.learning_rate)
    self.cv_opt, _ = optimizer(c, c.optimizer.cv_learning_rate or c.optimizer.learning_rate)
    self.init = jax.jit(jax.vmap(self._init_one, in_axes=(0, None)))
    self.chunk = jax.jit(self._chunk, static_argnums=3, donate_argnums=0)
    self.probe = jax.jit(jax.vmap(self._probe_one, in_axes=(0, 0, None, None)))

  def temperature_at(self, step):
    """The estimator's temperature argument at ``step``: the schedule's ``tau(step)``
    for an estimator with a sampling temperature, None for the others."""
    return self.tau(step) if self.uses_temperature else None

  def evaluation_temperature(self, step: int) -> float:
    """The temperature a model is evaluated at after ``step`` steps: the schedule's at
    the last of them (it matters only with slope annealing, ``temperature.slope``)."""
    if not self.uses_temperature:
      return 1.0
    return float(self.tau(max(step - 1, 0)))

  def _shard(self, batch):
    devices = self.mesh.devices.size

    def constrain(x):
      if devices > 1 and x.ndim and x.shape[0] % devices == 0:
        spec = PartitionSpec("data", *([None] * (x.ndim - 1)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))
      return x
    return jax.tree_util.tree_map(constrain, batch)

  def _init_one(self, seed_key, data):
    k_params, k_cv = jax.random.split(stream(seed_key, Stream.INIT))
    params = self.task.init(k_params)
    batch = self.task.batch(stream(seed_key, Stream.BATCH), jnp.zeros((), jnp.int32), data)
    cv = self.task.init_cv(self.estimator, k_cv, params, batch)
    return {"params": params, "opt": self.opt.init(params), "cv": cv,
            "cv_opt": self.cv_opt.init(cv.get("params", {}))}

  def _step(self, state, seed_key, step, data):
    k_grad = jax.random.fold_in(stream(seed_key, Stream.GRADIENT), step)
    batch = self._shard(self.task.batch(stream(seed_key, Stream.BATCH), step, data))
    out = self.task.gradients(self.estimator, k_grad, state["params"], state["cv"], batch,
                              self.temperature_at(step))
    updates, opt_state = self.opt.update(out.grads, state["opt"], state["params"])
    cv, cv_opt = out.cv, state["cv_opt"]
    if jax.tree_util.tree_leaves(cv.get("params", {})):
      cv_updates, cv_opt = self.cv_opt.update(out.cv_grads, cv_opt, cv["params"])
      cv = {**cv, "params": optax.apply_updates(cv["params"], cv_updates)}
    new = {"params": optax.apply_updates(state["params"], updates), "opt": opt_state,
           "cv": cv, "cv_opt": cv_opt}
    return new, out.loss

  def _chunk(self, state, seed_keys, start, length, data):
    def per_seed(st, seed_key):
      return jax.lax.scan(lambda s, i: self._step(s, seed_key, start + i, data), st,
                          jnp.arange(length))
    return jax.vmap(per_seed)(state, seed_keys)

  def _probe_one(self, state, seed_key, step, data):
    del data
    key = jax.random.fold_in(stream(seed_key, Stream.PROBE), step)
    return self.task.probe(self.estimator, key, state["params"], state["cv"],
                           self.temperature_at(step))
