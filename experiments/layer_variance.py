"""Per-layer gradient variance of estimators at a trained structured-output model.

Loads the newest checkpoint of one member of a ``structured_output`` run (the SBN of
Jang et al. 2017), fixes one batch of images of its first evaluation split (the
validation split when the config holds one out), and draws ``num_keys`` gradients of
the training loss with each estimator at those parameters. For every parameter
group (each stochastic layer's weights, then the output layer) it reports the
gradient's total variance (sum over coordinates of the per-coordinate variance) and
the squared norm of its mean. Estimators with a learned control variate (or a
running baseline) use the untrained one that ``init`` gives, except ``trained``: the
member's own estimator (name and options from its config, built by
:func:`experiments.program.build_estimator`) with the control variate of the same
checkpoint, as training left it (a temperature schedule is not replayed: the
estimator gets the config's initial temperature).

Usage (the member's own ``config.yaml`` says the task, data and estimator)::

  python -m experiments layer-variance \\
      runs/jang2017_sbn_bernoulli/members/structured_output-bernoulli-200-muprop-seed0 \\
      --estimators trained muprop muprop:mean_field=false reinforce straight_through --keys 512

An estimator is a registry name, optionally with hyperparameters after a colon
(``muprop:mean_field=false``, ``rloo:num_samples=4``; values are read as YAML), or
``trained`` (above).

References:
  Gu et al., MuProp, 2016 (arXiv 1511.05176): its control variate is the Taylor
  expansion of a deterministic mean-field network; the nested layers of
  ``experiments/tasks/structured.py`` expand around a network whose lower layers
  are still sampled.
"""

from __future__ import annotations

import enum
import pathlib

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import yaml

import gumbax
from experiments import config as cfg_lib
from experiments import files
from experiments.program import build_estimator
from experiments.tasks import make_task

__all__ = ["layer_variance", "parse_estimator"]


class _Key(enum.IntEnum):
  """Keys of a measurement: ``jax.random.key(seed + _Key.X)``."""
  GRADIENTS = 0    # split into one key per gradient
  CV_INIT = 1      # the control variate's initial parameters


def parse_estimator(spec: str, distribution: str):
  """``"name"`` or ``"name:key=value,key=value"`` -> an estimator.

  Raises:
    ValueError: an option that is not ``key=value``, or one the estimator refuses.
  """
  name, _, rest = spec.partition(":")
  options = {}
  for item in filter(None, rest.split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"Estimator option {item!r} in {spec!r} is not key=value.")
    options[key.strip()] = yaml.safe_load(value)
  return gumbax.estimators.get(name, distribution=distribution, **options)


def _load(member: pathlib.Path):
  """The member's config, task, newest checkpoint's parameters, its step, and the
  checkpoint's control variate as a raw state dict."""
  config = cfg_lib.load(member / "config.yaml")
  if config.task.name != "structured_output":
    raise ValueError(f"{member} is not a member of a structured_output run "
                     f"(its task is {config.task.name!r})")
  task = make_task(config)
  steps = files.checkpoint_steps(member)
  if not steps:
    raise ValueError(f"No checkpoint in {member}.")
  state = files.read_checkpoint(member, steps[-1])["state"]
  params = flax.serialization.from_state_dict(task.init(jax.random.key(0)), state["params"])
  return config, task, params, steps[-1], state.get("cv", {})


def _group_stats(grads, groups) -> dict[str, tuple[float, float]]:
  """``{group: (total variance, squared norm of the mean)}`` over the key axis."""
  out = {}
  for name, pick in groups.items():
    leaves = [np.asarray(x, np.float64).reshape(x.shape[0], -1)
              for x in jax.tree_util.tree_leaves(pick(grads))]
    flat = np.concatenate(leaves, axis=1)
    out[name] = (float(flat.var(axis=0, ddof=1).sum()), float(np.square(flat.mean(axis=0)).sum()))
  return out


def _measure(task, params, batch, estimator, num_keys, seed=0, trained_cv=None, temperature=None):
  """Per-group stats of ``num_keys`` gradients; ``trained_cv``, a state dict of the
  estimator's control variate, replaces the one ``init_cv`` gives; ``temperature``
  is the estimator's sampling temperature (None: its default)."""
  cv = task.init_cv(estimator, jax.random.key(seed + _Key.CV_INIT), params, batch)
  if trained_cv is not None:
    cv = flax.serialization.from_state_dict(cv, trained_cv)

  def one(key):
    return task.gradients(estimator, key, params, cv, batch, temperature).grads

  keys = jax.random.split(jax.random.key(seed + _Key.GRADIENTS), num_keys)
  grads = jax.lax.map(one, keys, batch_size=64)
  groups = {f"layer {l + 1}": (lambda g, l=l: g["layers"][l]) for l in range(task.depth)}
  groups["output"] = lambda g: g["out"]
  return _group_stats(grads, groups)


def layer_variance(member: str | pathlib.Path, estimators: list[str], num_keys: int) -> dict:
  """Measures each estimator's per-layer gradient variance at ``member``'s newest checkpoint.

  Args:
    member: a member folder of a ``structured_output`` run (with checkpoints).
    estimators: estimator specs (``"muprop"``, ``"muprop:mean_field=false"``, ``"trained"``).
    num_keys: gradients per estimator, at least 2.

  Returns:
    ``{"member", "step", "keys", "split", "batch_size", "stats"}`` where ``stats`` maps
    each estimator (``trained`` as ``"trained <name>"``) to ``{group: (total
    variance, squared norm of the mean)}``.

  Raises:
    ValueError: ``num_keys`` < 2, a member of another task or without checkpoints, or
      a bad estimator spec.
  """
  if isinstance(num_keys, bool) or not isinstance(num_keys, int) or num_keys < 2:
    raise ValueError(f"num_keys must be an integer of at least 2 (a variance needs two "
                     f"gradients), got {num_keys!r}")
  member = pathlib.Path(member)
  config, task, params, step, member_cv = _load(member)
  split = task.eval_splits[0]                  # "valid" when the config holds one out
  batch = jnp.asarray(np.asarray(task.eval_images[split][:config.train.batch_size], np.float32))
  stats = {}
  for name in estimators:
    if name == "trained":                      # the run's own estimator and control variate
      est = build_estimator(config)
      tau = config.temperature.init if est.uses_temperature else None
      stats[f"trained {config.estimator.name}"] = _measure(
          task, params, batch, est, num_keys, trained_cv=member_cv, temperature=tau)
    else:
      est = parse_estimator(name, config.task.distribution)
      stats[name] = _measure(task, params, batch, est, num_keys)
  return {"member": str(member), "step": step, "keys": num_keys, "split": split,
          "batch_size": int(batch.shape[0]), "stats": stats}
