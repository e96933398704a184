"""The experiment schema: YAML files validated by pydantic before any computation.

A config names one task, one estimator, a temperature schedule, an optimizer and a
training length; its ``sweep:`` section lists values to run every combination of
(tasks x estimators x temperatures x learning rates x seeds). :func:`load` reads a
YAML file, applies ``key=value`` overrides and validates;
:func:`experiments.sweep.expand` turns the result into sweep members.

Why pydantic: typed fields with ``extra="forbid"`` catch unknown keys and wrong
types with the dotted location of the error, ``Literal`` fields list the valid
choices in the message, and discriminated unions select the task schema by name.
PyYAML parses the files and the override values (so ``sweep.seeds=[0,1]`` is a list).
"""

from __future__ import annotations

import pathlib
import re
from typing import Annotated, Any, Literal, Optional, Union

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

import gumbax

__all__ = ["Config", "ConfigError", "EstimatorSpec", "incompatibility", "load", "parse_overrides",
           "to_yaml", "validate"]

Distribution = Literal["bernoulli", "categorical"]
PositiveInt = Annotated[int, Field(ge=1)]
Positive = Annotated[float, Field(gt=0)]


class ConfigError(ValueError):
  """An invalid config; the message names every offending key and the valid choices."""


class _Schema(BaseModel):
  model_config = ConfigDict(extra="forbid", frozen=True)


class ToyTask(_Schema):
  """Minimize ``E[(b.v - target)^2]``; Bernoulli ``b`` or one-hot ``b`` with ``v_j = j/(K-1)``."""
  name: Literal["toy"] = "toy"
  distribution: Distribution = "bernoulli"
  target: float = 0.45
  num_classes: Annotated[int, Field(ge=2)] = 3
  init_logit: float = 0.0
  variance_samples: Annotated[int, Field(ge=2)] = 256


class VaeTask(_Schema):
  """MNIST VAE with one layer of Bernoulli or categorical latents."""
  name: Literal["vae"] = "vae"
  distribution: Distribution = "categorical"
  num_latents: PositiveInt = 20
  num_classes: Annotated[int, Field(ge=2)] = 10
  encoder: list[PositiveInt] = [512, 256]
  decoder: list[PositiveInt] = [256, 512]
  prior: Literal["uniform", "learned"] = "uniform"
  eval_samples: PositiveInt = 100
  final_eval_samples: PositiveInt = 1000
  eval_examples: Optional[PositiveInt] = 1000
  final_eval_examples: Optional[PositiveInt] = None


class StructuredTask(_Schema):
  """Lower half of a digit from its upper half through stochastic layers (an SBN)."""
  name: Literal["structured_output"] = "structured_output"
  distribution: Distribution = "bernoulli"
  num_latents: PositiveInt = 200
  num_classes: Annotated[int, Field(ge=2)] = 10
  stochastic_layers: Annotated[int, Field(ge=1, le=4)] = 2
  eval_samples: PositiveInt = 100
  final_eval_samples: PositiveInt = 1000
  eval_examples: Optional[PositiveInt] = 1000
  final_eval_examples: Optional[PositiveInt] = None


TaskConfig = Annotated[Union[ToyTask, VaeTask, StructuredTask], Field(discriminator="name")]
TASKS = ("toy", "vae", "structured_output")


class Temperature(_Schema):
  """Temperature of the pathwise estimators (constant or a ``gumbax.schedules`` schedule).

  REBAR and RELAX learn their temperature; it starts at ``init`` (their ``lambda_init``).

  ``slope: true`` is slope annealing (Chung et al. 2016): the task divides its
  logits by tau, so the distribution sampled (and the KL term) sharpens as tau
  falls, and the estimator runs at temperature 1, its backward pass differentiating
  that same tempered distribution. Without it (the default) the temperature reaches
  only the estimator: ``straight_through`` samples from ``softmax(logits)`` and
  differentiates ``softmax(logits / tau)``. Slope annealing needs the vae task and an
  estimator whose temperature the schedule drives.
  """
  schedule: Literal["constant", "exponential", "linear", "cosine"] = "constant"
  init: Positive = 1.0
  final: Positive = 0.5
  rate: Annotated[float, Field(ge=0)] = 3e-5
  every: PositiveInt = 1000
  steps: Optional[PositiveInt] = None
  slope: bool = False


OptimizerName = Literal["adam", "sgd"]
Momentum = Annotated[float, Field(ge=0, lt=1)]
DecayRate = Annotated[float, Field(gt=0, le=1)]


class Optimizer(_Schema):
  """Adam or SGD (with ``momentum``); the rate decays as ``learning_rate *
  decay_rate ** floor(step / decay_steps)``. Control variates (RELAX, REBAR, NVIL)
  use ``cv_learning_rate`` (default: ``learning_rate``)."""
  name: OptimizerName = "adam"
  learning_rate: Positive = 1e-3
  momentum: Momentum = 0.9
  decay_rate: DecayRate = 1.0
  decay_steps: PositiveInt = 1000
  cv_learning_rate: Optional[Positive] = None


class OptimizerOverride(_Schema):
  """The optimizer fields one estimator changes; a field left unset (null) keeps the
  config's value. E.g. ``{decay_rate: 1.0}``: this estimator's rate does not decay."""
  name: Optional[OptimizerName] = None
  learning_rate: Optional[Positive] = None
  momentum: Optional[Momentum] = None
  decay_rate: Optional[DecayRate] = None
  decay_steps: Optional[PositiveInt] = None
  cv_learning_rate: Optional[Positive] = None

  def apply(self, optimizer: Optimizer) -> Optimizer:
    """``optimizer`` with the fields set here replaced."""
    return optimizer.model_copy(update=self.model_dump(exclude_none=True))


class EstimatorSpec(_Schema):
  """A registry name and hyperparameters for ``gumbax.estimators.get``.

  ``temperature`` replaces the config's temperature section for this estimator
  (e.g. plain and annealed straight-through in one sweep); ``optimizer`` replaces
  the fields it sets of the config's optimizer section (e.g. ``{decay_rate: 1.0}``,
  no decay for this estimator alone); ``label`` names it in folders and tables
  (default: ``name(option=value, ...)``); ``tasks`` limits it to the sweep's tasks of
  those names (e.g. ``[toy]``; default: every task it can train).
  """
  name: str = "relaxed"
  options: dict[str, Any] = {}
  temperature: Optional[Temperature] = None
  optimizer: Optional[OptimizerOverride] = None
  label: Optional[str] = None
  tasks: Optional[list[Literal["toy", "vae", "structured_output"]]] = None

  @pydantic.model_validator(mode="before")
  @classmethod
  def _from_string(cls, value):
    return {"name": value} if isinstance(value, str) else value

  @pydantic.field_validator("name")
  @classmethod
  def _known(cls, name):
    if name not in gumbax.estimators.names():
      raise ValueError(f"unknown estimator {name!r}; valid names are {gumbax.estimators.names()}")
    return name

  @pydantic.field_validator("options")
  @classmethod
  def _no_temperature(cls, options):
    if "temperature" in options:
      raise ValueError("set the temperature in a `temperature:` section (of the config or of "
                       "this estimator), not in `options`")
    return options

  @property
  def title(self) -> str:
    """``label``, or ``name`` / ``name(key=value, ...)``: the name in tables."""
    if self.label:
      return self.label
    if not self.options:
      return self.name
    return self.name + "(" + ", ".join(f"{k}={v}" for k, v in sorted(self.options.items())) + ")"

  @property
  def slug(self) -> str:
    """The name in folder names."""
    return self.label or self.name + "".join(f"_{k}={v}" for k, v in sorted(self.options.items()))


class Train(_Schema):
  steps: PositiveInt = 1000
  batch_size: PositiveInt = 100
  log_every: PositiveInt = 10
  eval_every: Annotated[int, Field(ge=0)] = 1000
  checkpoint_every: PositiveInt = 1000

  @pydantic.model_validator(mode="after")
  def _aligned(self):
    for key in ("steps", "eval_every", "checkpoint_every"):
      if getattr(self, key) % self.log_every:
        raise ValueError(
            f"train.{key} ({getattr(self, key)}) must be a multiple of train.log_every "
            f"({self.log_every}): steps run in chunks of log_every")
    return self


class Data(_Schema):
  """Where MNIST comes from and how it is binarized and split.

  ``dir`` (default ``$GUMBAX_DATA_DIR``, else ``~/.cache/gumbax/mnist``) holds the
  four IDX files; missing ones are downloaded from ``mirrors`` (default
  ``experiments.data.MIRRORS``) when ``download`` is true. ``if_missing: skip`` runs
  the members that need no MNIST when it cannot be had, instead of failing.
  """
  dir: Optional[str] = None
  binarization: Literal["fixed", "dynamic"] = "fixed"
  binarization_seed: int = 0
  validation_size: Annotated[int, Field(ge=0)] = 10000
  train_examples: Optional[PositiveInt] = None
  download: bool = True
  mirrors: Optional[list[str]] = None
  if_missing: Literal["error", "skip"] = "error"


class Sweep(_Schema):
  tasks: Optional[list[TaskConfig]] = None
  estimators: Optional[list[EstimatorSpec]] = None
  seeds: Optional[list[int]] = None
  temperatures: Optional[list[Positive]] = None
  learning_rates: Optional[list[Positive]] = None


class VarianceStudy(_Schema):
  """Settings of ``python -m experiments variance`` (ignored by ``run``).

  ``train_estimator`` trains the one reference run (default: ``estimator``);
  ``checkpoints`` are its steps at which every estimator of ``sweep.estimators`` is
  measured with ``num_samples`` gradients on one fixed batch. Control variates
  are adapted for ``cv_steps`` variance-objective steps at each checkpoint. The
  reference gradient is exact on the toy task (``auto``) and otherwise the mean of
  ``reference_samples`` draws of ``reference_estimator``.
  """
  train_estimator: Optional[EstimatorSpec] = None
  checkpoints: list[Annotated[int, Field(ge=0)]] = [0]
  num_samples: Annotated[int, Field(ge=2)] = 1000
  chunk_size: PositiveInt = 100
  cv_steps: Annotated[int, Field(ge=0)] = 0
  cv_learning_rate: Positive = 0.01
  reference: Literal["auto", "exact", "estimator"] = "auto"
  reference_estimator: EstimatorSpec = EstimatorSpec(name="rloo", options={"num_samples": 10})
  reference_samples: Annotated[int, Field(ge=2)] = 10000


class Config(_Schema):
  name: str
  description: str = ""
  task: TaskConfig = ToyTask()
  estimator: EstimatorSpec = EstimatorSpec()
  temperature: Temperature = Temperature()
  optimizer: Optimizer = Optimizer()
  train: Train = Train()
  data: Data = Data()
  seed: int = 0
  seeds_vectorized: bool = False
  sweep: Sweep = Sweep()
  variance: VarianceStudy = VarianceStudy()


SLOPE_TASKS = ("vae",)  # the tasks whose logits slope annealing can temper


def incompatibility(task, spec: EstimatorSpec,
                    temperature: Optional[Temperature] = None) -> Optional[str]:
  """Why ``spec`` cannot train ``task`` (None when it can); ``temperature`` is the
  config's section, which ``spec``'s own replaces."""
  if spec.name == "exact" and task.name != "toy":
    return f"'exact' enumerates every configuration; only the toy task is small enough ({task.name!r})"
  temperature = spec.temperature or temperature
  if temperature and temperature.slope and task.name not in SLOPE_TASKS:
    return (f"slope annealing (temperature.slope) tempers the logits of the "
            f"{', '.join(SLOPE_TASKS)} task only ({task.name!r})")
  try:
    gumbax.estimators.get(spec.name, distribution=task.distribution, **spec.options)
  except (TypeError, ValueError) as err:
    return str(err)
  return None


def parse_overrides(overrides: list[str]) -> dict:
  """``["train.steps=10", "sweep.seeds=[0,1]"]`` -> a nested dict (values parsed as YAML)."""
  result: dict = {}
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
      raise ConfigError(f"Override {item!r} is not of the form dotted.key=value (e.g. train.steps=100).")
    node = result
    *parents, leaf = key.split(".")
    for part in parents:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ConfigError(f"Override {item!r} conflicts with another override of {part!r}.")
    try:
      node[leaf] = yaml.safe_load(value) if value else None
    except yaml.YAMLError as err:
      problem = " ".join(str(getattr(err, "problem", None) or err).split())
      raise ConfigError(f"Override {item!r}: the value {value!r} is not valid YAML ({problem}); "
                        "quote it for the shell, e.g. 'sweep.seeds=[0,1]'.") from None
  return result


def _merge(base: dict, update: dict) -> dict:
  out = dict(base)
  for key, value in update.items():
    if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("options",):
      out[key] = _merge(out[key], value)
    else:
      out[key] = value
  return out


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
  """The field names of the sub-schema at ``loc`` (best effort, for error messages)."""
  for part in loc:
    if isinstance(part, int):
      continue
    field = model.model_fields.get(part)
    if field is None:
      if part in TASKS:  # discriminated-union tag
        model = {"toy": ToyTask, "vae": VaeTask, "structured_output": StructuredTask}[part]
        continue
      break
    annotation = field.annotation
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
      inner = [candidate, *getattr(candidate, "__args__", ())]
      found = [c for c in inner if isinstance(c, type) and issubclass(c, BaseModel)]
      if found:
        model = found[0]
        break
    else:
      return []
  return sorted(model.model_fields)


def _format(err: pydantic.ValidationError, source: str) -> ConfigError:
  lines = []
  for e in err.errors():
    loc = tuple(e["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    if e["type"] == "extra_forbidden":
      valid = _valid_keys(Config, loc[:-1])
      lines.append(f"  {where}: unknown key; valid keys here are {valid}")
    else:
      msg = e["msg"].removeprefix("Value error, ")
      lines.append(f"  {where}: {msg} (got {e.get('input')!r})"
                   if e["type"] not in ("missing",) else f"  {where}: required key is missing")
  return ConfigError(f"Invalid config {source}:\n" + "\n".join(lines))


def validate(raw: dict, source: str = "<dict>") -> Config:
  """Validates a raw mapping; raises :class:`ConfigError` naming every bad key."""
  if not isinstance(raw, dict):
    raise ConfigError(f"Invalid config {source}: the top level must be a mapping; got {type(raw).__name__}.")
  raw = dict(raw)
  if isinstance(raw.get("task"), dict) and "name" not in raw["task"]:
    raw["task"] = {**raw["task"], "name": "toy"}  # the default task
  try:
    config = Config.model_validate(raw)
  except pydantic.ValidationError as err:
    raise _format(err, source) from None
  problems = []
  tasks = config.sweep.tasks or [config.task]
  specs = config.sweep.estimators or [config.estimator]
  if not config.sweep.tasks and not config.sweep.estimators:
    reason = incompatibility(config.task, config.estimator, config.temperature)
    if reason:
      problems.append(f"  estimator: {config.estimator.title} cannot train this task: {reason}")
  for spec in specs:
    temperature = spec.temperature or config.temperature
    if temperature.slope and not gumbax.estimators.get(spec.name).uses_temperature:
      problems.append(f"  estimator {spec.title}: temperature.slope needs an estimator whose "
                      "temperature the schedule drives (e.g. straight_through); "
                      f"{spec.name!r} has none or learns its own")
    if config.sweep.learning_rates and spec.optimizer and spec.optimizer.learning_rate:
      problems.append(f"  estimator {spec.title}: sets optimizer.learning_rate and the sweep sets "
                      "learning_rates; give the rate in one place")
    if spec.tasks is not None and not any(t.name in spec.tasks for t in tasks):
      problems.append(f"  estimator {spec.title}: tasks {spec.tasks} names none of the "
                      f"sweep's tasks {sorted({t.name for t in tasks})}")
    elif all(incompatibility(t, spec, config.temperature) for t in tasks):
      problems.append(f"  estimator {spec.title}: fits none of the tasks: {incompatibility(tasks[0], spec, config.temperature)}")
  if problems:
    raise ConfigError(f"Invalid config {source}:\n" + "\n".join(problems))
  return config


def load(path: str | pathlib.Path, overrides: list[str] = ()) -> Config:
  """Reads a YAML config, applies ``key=value`` overrides, validates.

  Raises:
    ConfigError: a YAML syntax error, an unknown key, a wrong type or an unknown
      task / estimator name; the message names each key and the valid choices.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(f"Config file {str(path)!r} does not exist; see `python -m experiments list`.")
  try:
    raw = yaml.safe_load(path.read_text()) or {}
  except yaml.YAMLError as err:
    raise ConfigError(f"Config {path} is not valid YAML: {err}") from None
  if isinstance(raw, dict):
    raw = _merge(raw, parse_overrides(list(overrides)))
    raw.setdefault("name", path.stem)
  return validate(raw, str(path))


def to_yaml(config: Config) -> str:
  """The resolved config as YAML (every default spelled out)."""
  return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
