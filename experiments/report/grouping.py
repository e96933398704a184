"""Which members are seeds of one group, and the text that names a group's settings.

Members that differ only by seed form a *group* (one :class:`GroupKey`); tables and
plots aggregate over the seeds of each group. The task part of the key names the
model: the task's short name plus each model or data setting that is not its default
(``vae-bernoulli-200-prior=learned``), so that runs of different models never share
a group.
"""

from __future__ import annotations

import collections
import typing
from typing import Any, Iterable, NamedTuple

from experiments import config as cfg_lib
from experiments.report.loading import MemberResult
from experiments.tasks import MNIST_TASKS

# name -> schema, from the config's discriminated union of task schemas.
_TASK_SCHEMAS = {schema.model_fields["name"].default: schema
                 for schema in typing.get_args(typing.get_args(cfg_lib.TaskConfig)[0])}
# Task settings already in the short name (config.describe), or that change only how a
# member is evaluated, not the model it trains.
_NOT_MODEL_SETTINGS = frozenset({"name", "distribution", "num_latents", "num_classes", "target",
                                 "selector", "num_selected",
                                 "eval_samples", "final_eval_samples", "eval_examples",
                                 "final_eval_examples", "variance_samples"})
# Data settings that say where the data comes from, not which data a model trains on.
_NOT_DATA_SETTINGS = frozenset({"dir", "download", "mirrors", "if_missing"})


class GroupKey(NamedTuple):
  """What the members of a group share: everything but the seed."""
  task: Any
  estimator: Any
  temperature: Any  # the initial temperature
  schedule: str  # temperature_schedule(); "" for none
  learning_rate: Any
  lr_decay: str  # lr_decay(); "" for none
  train: str = ""  # train_text(): training length and batch size; "" when unknown


def lr_decay(summary: dict) -> str:
  """The learning-rate decay of a member, e.g. ``x0.9/1000`` (every 1000 steps); ``""`` for none."""
  optimizer = (summary.get("hyperparameters") or {}).get("optimizer") or {}
  rate = optimizer.get("decay_rate", 1.0)
  if not isinstance(rate, (int, float)) or rate >= 1:
    return ""
  return f"x{rate:g}/{optimizer.get('decay_steps', '?')}"


def temperature_schedule(member: MemberResult) -> str:
  """How a member's temperature moved during training, e.g. ``exponential 3e-05/1000 to 0.5``.

  ``""`` when it stayed at its initial value: a constant schedule, or an estimator the
  schedule does not drive (REBAR and RELAX learn their temperature; score-function
  estimators have none). The runner logs ``temperature`` in the train rows exactly
  when the schedule drives the estimator, so that is what decides it here. Slope
  annealing (``temperature.slope``: the model's logits are divided by tau) adds
  ``slope``, e.g. ``exponential 1e-05/1000 to 0.5, slope``.
  """
  hyper = member.summary.get("hyperparameters") or {}
  t = hyper.get("temperature") or {}
  schedule = t.get("schedule", "constant")
  slope = ["slope"] if t.get("slope") else []
  if schedule == "constant" or not any(
      row.get("split") == "train" and "temperature" in row for row in member.metrics):
    return ", ".join(slope)
  g = lambda x: f"{x:g}" if isinstance(x, (int, float)) else "?"
  if schedule == "exponential":
    text = f"exponential {g(t.get('rate'))}/{g(t.get('every'))} to {g(t.get('final'))}"
  else:
    steps = t.get("steps") or (hyper.get("train") or {}).get("steps")
    text = f"{schedule} to {g(t.get('final'))} over {g(steps)}"
  return ", ".join([text] + slope)


def task_text(summary: dict) -> Any:
  """A member's task: ``summary["task"]`` (e.g. ``vae-bernoulli-200``), followed by each
  model or data setting of its config that the name leaves out and that differs from
  its schema's default, e.g. ``vae-bernoulli-200-prior=learned``,
  ``vae-categorical-20x10-encoder=256_128`` or ``vae-bernoulli-200-binarization=dynamic``.
  Evaluation settings (``eval_samples``, ...), where the data is read from
  (``data.dir``, ...) and data settings of tasks without data (toy) are left out.
  Summaries without the task's hyperparameters give the bare name.
  """
  name = summary.get("task")
  hyperparameters = summary.get("hyperparameters") or {}
  hyper = hyperparameters.get("task")
  schema = _TASK_SCHEMAS.get(hyper.get("name")) if isinstance(hyper, dict) else None
  if schema is None:
    return name
  parts = [str(name)]
  # Data settings name the data a model trains on; the toy task has none.
  data = hyperparameters.get("data") if hyper.get("name") in MNIST_TASKS else None
  for settings, values, skip in ((schema, hyper, _NOT_MODEL_SETTINGS),
                                 (cfg_lib.Data, data if isinstance(data, dict) else {},
                                  _NOT_DATA_SETTINGS)):
    for field, info in settings.model_fields.items():
      if field in skip or field not in values:
        continue
      value = values[field]
      if value != info.get_default(call_default_factory=True):
        text = "_".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{field}={text}")
  return "-".join(parts)


def train_text(summary: dict) -> str:
  """``steps=N batch=B`` from a member's ``train`` hyperparameters ("" without them):
  members trained for different lengths or batch sizes are not seeds of one group."""
  train = (summary.get("hyperparameters") or {}).get("train")
  if not isinstance(train, dict):
    return ""
  return " ".join(f"{label}={train[field]}" for field, label in
                  (("steps", "steps"), ("batch_size", "batch")) if field in train)


def group_key(member: MemberResult) -> GroupKey:
  """The members that differ only by seed share this key."""
  s = member.summary
  return GroupKey(task_text(s), s.get("estimator"), s.get("temperature"),
                  temperature_schedule(member), s.get("learning_rate"), lr_decay(s),
                  train_text(s))


def _sort_key(key: GroupKey) -> tuple:
  return (str(key.task), str(key.estimator), key.temperature is None, key.temperature or 0.0,
          key.schedule, key.learning_rate or 0.0, key.lr_decay, key.train)


def groups(members: Iterable[MemberResult]) -> dict[GroupKey, list[MemberResult]]:
  """The members by :func:`group_key`, groups in table order (task, estimator,
  temperature, schedule, learning rate, decay, training), members in input order."""
  by_key = collections.defaultdict(list)
  for member in members:
    by_key[group_key(member)].append(member)
  return {key: by_key[key] for key in sorted(by_key, key=_sort_key)}


def lr_text(key: GroupKey) -> str:
  """A group's learning rate and decay, e.g. ``0.001 x0.9/1000``; ``-`` without a rate."""
  if key.learning_rate is None:
    return "-"
  return f"{key.learning_rate:g}" + (f" {key.lr_decay}" if key.lr_decay else "")


def temperature_text(key: GroupKey) -> str:
  """A group's initial temperature and schedule, e.g. ``1, linear to 0.25 over 500``;
  ``-`` without a temperature."""
  if key.temperature is None:
    return "-"
  return f"{key.temperature:g}" + (f", {key.schedule}" if key.schedule else "")
