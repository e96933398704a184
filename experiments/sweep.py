"""Sweep expansion: a config's ``sweep:`` section turned into members, and their names.

A config (:mod:`experiments.config`) lists values to run in every combination
(tasks x estimators x temperatures x learning rates x seeds); :func:`expand` turns
it into :class:`Member` objects, each a complete config without a sweep and a
folder name built from the settings that vary (``vae-categorical-20x10-rloo-seed0``).
Members that differ only by seed share a *group* (the name without ``-seedN``),
which the runner trains as one vectorized program.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

from experiments.config import Config, ConfigError, EstimatorSpec, Sweep, incompatibility

__all__ = ["Member", "describe", "expand", "for_estimator", "task_label"]


@dataclasses.dataclass(frozen=True)
class Member:
  """One sweep member: a complete config (no sweep) and its folder name."""
  id: str
  config: Config
  task_label: str = ""

  @property
  def group(self) -> str:
    """The id without the seed: members differing only by seed share it."""
    return self.id.rsplit("-seed", 1)[0]


def describe(task) -> str:
  """A short name of a task configuration, e.g. ``vae-categorical-20x10`` or
  ``feature_selection-concrete-k50``."""
  if task.name == "feature_selection":
    return f"{task.name}-{task.selector}-k{task.num_selected}"
  if task.distribution == "categorical":
    shape = f"K{task.num_classes}" if task.name == "toy" else f"{task.num_latents}x{task.num_classes}"
  else:
    shape = "" if task.name == "toy" else f"{task.num_latents}"
  parts = [task.name, task.distribution, shape]
  if task.name == "toy":
    parts.append(f"t{task.target:g}")
  return "-".join(p for p in parts if p)


def task_label(task, tasks) -> str:
  """:func:`describe`, made unique within a sweep's task list."""
  label = describe(task)
  if [describe(t) for t in tasks].count(label) > 1:
    label += f"-task{tasks.index(task)}"
  return label


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def for_estimator(config: Config, spec: EstimatorSpec) -> Config:
  """``config`` as ``spec`` runs it: its estimator, its temperature section (when it
  has one) and its optimizer fields in place of the config's; without a sweep."""
  return config.model_copy(update={
      "estimator": spec, "sweep": Sweep(),
      "temperature": spec.temperature or config.temperature,
      "optimizer": spec.optimizer.apply(config.optimizer) if spec.optimizer else config.optimizer})


def expand(config: Config) -> tuple[list[Member], list[str]]:
  """Every (task, estimator, temperature, learning rate, seed) combination of the sweep.

  Returns:
    ``(members, skipped)``: the members, and a note for each incompatible
    (task, estimator) pair left out.
  """
  sweep = config.sweep
  tasks = sweep.tasks or [config.task]
  specs = sweep.estimators or [config.estimator]
  temps = sweep.temperatures or [config.temperature.init]
  lrs = sweep.learning_rates or [config.optimizer.learning_rate]
  seeds = sweep.seeds if sweep.seeds is not None else [config.seed]
  members, skipped, seen = [], [], set()
  for task, spec, temp, lr, seed in itertools.product(tasks, specs, temps, lrs, seeds):
    if spec.tasks is not None and task.name not in spec.tasks:
      continue  # the entry asks for other tasks only
    reason = incompatibility(task, spec, config.temperature)
    if reason:
      note = f"skipped {task.name}/{task.distribution} x {spec.title}: {reason}"
      if note not in skipped:
        skipped.append(note)
      continue
    parts = [task_label(task, tasks), spec.slug]
    if len(temps) > 1:
      parts.append(f"tau{temp:g}")
    if len(lrs) > 1:
      parts.append(f"lr{lr:g}")
    member_id = _slug("-".join(parts)) + f"-seed{seed}"
    if member_id in seen:
      raise ConfigError(f"The sweep lists the same member twice: {member_id}. Give one of the "
                        "estimator entries a `label` (e.g. two optimizer settings of one estimator).")
    seen.add(member_id)
    at_lr = config.optimizer.model_copy(update={"learning_rate": lr})
    member = for_estimator(config.model_copy(update={"optimizer": at_lr}), spec)
    member = member.model_copy(update={"task": task, "seed": seed})
    if sweep.temperatures:
      tau = member.temperature.model_copy(update={"init": temp})
      member = member.model_copy(update={"temperature": tau})
    members.append(Member(member_id, member, task_label(task, tasks)))
  return members, skipped
