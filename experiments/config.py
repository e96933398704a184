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
  # use_attribute_docstrings: the docstring under a field is its description, which
  # the config reference of the documentation shows (docs/_ext/config_reference.py).
  model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ToyTask(_Schema):
  """Minimize ``E[(b.v - target)^2]``; Bernoulli ``b`` or one-hot ``b`` with ``v_j = j/(K-1)``."""
  name: Literal["toy"] = "toy"
  """Selects this task: one discrete variable and an exact loss (no data)."""
  distribution: Distribution = "bernoulli"
  """``bernoulli``: one binary ``b``, loss ``(b - target)^2``; ``categorical``: a one-hot
  ``b`` over ``num_classes`` classes, loss ``(b.v - target)^2``."""
  target: float = 0.45
  """The ``t`` of the loss. Near 0.5 the Bernoulli problem's two outcomes differ little
  in loss, so its gradient is small next to the estimator's noise (REBAR: 0.45, RELAX:
  0.499)."""
  num_classes: Annotated[int, Field(ge=2)] = 3
  """K, the classes of the categorical variable (values ``v_j = j/(K-1)``; K = 2 is the
  Bernoulli problem); ignored when ``distribution`` is ``bernoulli``."""
  init_logit: float = 0.0
  """The initial value of every logit ``theta`` (0: probability 1/2, or uniform over the
  K classes)."""
  variance_samples: Annotated[int, Field(ge=2)] = 256
  """Gradient samples drawn at every log step (``train.log_every``) for the logged
  ``grad_variance``, the estimator's gradient variance at the current logits."""


class VaeTask(_Schema):
  """MNIST VAE with one layer of Bernoulli or categorical latents."""
  name: Literal["vae"] = "vae"
  """Selects this task: the discrete-latent VAE on binarized MNIST (needs the
  ``data`` section's MNIST)."""
  distribution: Distribution = "categorical"
  """``bernoulli``: ``num_latents`` binary latents; ``categorical``: ``num_latents``
  latents of ``num_classes`` classes each (one-hot)."""
  num_latents: PositiveInt = 20
  """The number of latent variables."""
  num_classes: Annotated[int, Field(ge=2)] = 10
  """Classes of each categorical latent; ignored when ``distribution`` is ``bernoulli``."""
  encoder: list[PositiveInt] = [512, 256]
  """Widths of the encoder's hidden layers, from the 784 pixels to the latents' logits
  (ReLU between layers)."""
  decoder: list[PositiveInt] = [256, 512]
  """Widths of the decoder's hidden layers, from the latents to the 784 pixels' Bernoulli
  logits (ReLU between layers)."""
  prior: Literal["uniform", "learned"] = "uniform"
  """``uniform``: a fixed uniform prior ``p(z)``; ``learned``: one trained logit per
  latent (and class), updated with the model by ``optimizer``."""
  eval_samples: PositiveInt = 100
  """Importance samples m per example in the evaluations during training
  (``train.eval_every``): ``nll`` is the m-sample importance-weighted bound."""
  final_eval_samples: PositiveInt = 1000
  """m of the final evaluation after the last step (the reported numbers);
  ``python -m experiments evaluate --samples`` redoes it later with another m."""
  eval_examples: Optional[PositiveInt] = 1000
  """Examples of each split (the first ones) in the evaluations during training;
  null: the whole split."""
  final_eval_examples: Optional[PositiveInt] = None
  """Examples of each split in the final evaluation; null: the whole split."""


class StructuredTask(_Schema):
  """Lower half of a digit from its upper half through stochastic layers (an SBN)."""
  name: Literal["structured_output"] = "structured_output"
  """Selects this task: structured output prediction on binarized MNIST (needs the
  ``data`` section's MNIST)."""
  distribution: Distribution = "bernoulli"
  """``bernoulli``: every stochastic layer is ``num_latents`` binary units;
  ``categorical``: ``num_latents`` one-hot variables of ``num_classes`` classes."""
  num_latents: PositiveInt = 200
  """Units (or categorical variables) per stochastic layer."""
  num_classes: Annotated[int, Field(ge=2)] = 10
  """Classes of each categorical variable; ignored when ``distribution`` is ``bernoulli``."""
  stochastic_layers: Annotated[int, Field(ge=1, le=4)] = 2
  """Stochastic layers between the upper half (392 pixels) and the lower half; each layer
  is trained by the estimator, each with its own control variate."""
  eval_samples: PositiveInt = 100
  """Samples m per example, drawn ancestrally through the network, for the ``nll`` of the
  evaluations during training (``train.eval_every``); training uses m = 1."""
  final_eval_samples: PositiveInt = 1000
  """m of the final evaluation after the last step (the reported numbers);
  ``python -m experiments evaluate --samples`` redoes it later with another m."""
  eval_examples: Optional[PositiveInt] = 1000
  """Examples of each split (the first ones) in the evaluations during training;
  null: the whole split."""
  final_eval_examples: Optional[PositiveInt] = None
  """Examples of each split in the final evaluation; null: the whole split."""


MNIST_PIXELS = 784
SELECTORS = ("concrete", "top_k")
# The estimators a top_k selector runs, mapped to relaxed_top_k's ``hard`` argument.
TOP_K_ESTIMATORS = {"relaxed": False, "straight_through_gumbel": True}


class FeatureSelectionTask(_Schema):
  """Select ``num_selected`` of MNIST's 784 pixels and reconstruct the image from them
  (the concrete autoencoder of Abid, Balin & Zou 2019)."""
  name: Literal["feature_selection"] = "feature_selection"
  """Selects this task: unsupervised feature selection on MNIST grey levels (needs the
  ``data`` section's MNIST; the paper's protocol takes ``binarization: none`` and
  ``source: test_file``)."""
  distribution: Literal["categorical"] = "categorical"
  """Always ``categorical``: each selector node is a categorical over the pixels."""
  selector: Literal["concrete", "top_k"] = "concrete"
  """``concrete``: ``num_selected`` nodes, each a categorical over the 784 pixels
  (logits of shape ``(k, 784)``; nodes may pick the same pixel), trained by any
  estimator that takes categorical logits; ``top_k``: one logit per pixel (shape
  ``(784,)``) and a relaxed k-subset (``gumbax.relaxed_top_k``) whose mask multiplies
  the image: ``relaxed`` trains it with the soft subset, ``straight_through_gumbel``
  with the exact subset forward and the soft one backward; other estimators do not
  apply."""
  num_selected: Annotated[int, Field(ge=1)] = 50
  """k, the number of pixels selected (at most 784)."""
  decoder: list[PositiveInt] = [75]
  """Widths of the decoder's hidden layers, from the k selected pixels (``concrete``)
  or the masked 784-pixel image (``top_k``) to the 784 reconstructed grey levels
  (leaky ReLU of slope 0.2 between layers). The paper's is ``[k * 3 // 2]``."""
  eval_examples: Optional[PositiveInt] = None
  """Examples of each split (the first ones) in the evaluations during training;
  null: the whole split."""
  final_eval_examples: Optional[PositiveInt] = None
  """Examples of each split in the final evaluation; null: the whole split."""

  @pydantic.field_validator("num_selected")
  @classmethod
  def _at_most_pixels(cls, k):
    if k > MNIST_PIXELS:
      raise ValueError(f"num_selected (k = {k}) must be at most the {MNIST_PIXELS} pixels "
                       "of an MNIST image")
    return k


TaskConfig = Annotated[Union[ToyTask, VaeTask, StructuredTask, FeatureSelectionTask],
                       Field(discriminator="name")]
TASKS = ("toy", "vae", "structured_output", "feature_selection")


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
  """``constant``: ``init`` at every step; ``exponential``: ``max(final, init *
  exp(-rate * t))`` with ``t`` the step rounded down to a multiple of ``every`` (Jang et
  al. 2017); ``linear`` and ``cosine``: from ``init`` to ``final`` over ``steps`` steps,
  then ``final``."""
  init: Positive = 1.0
  """The temperature at step 0, and the initial learned temperature of REBAR and RELAX
  (their ``lambda_init``); ``sweep.temperatures`` replaces it."""
  final: Positive = 0.5
  """The floor of the ``exponential`` schedule and the end value of ``linear`` and
  ``cosine``; unused by ``constant``."""
  rate: Annotated[float, Field(ge=0)] = 3e-5
  """The ``exponential`` schedule's decay rate per step (``exponential`` only)."""
  every: PositiveInt = 1000
  """Steps between two updates of the ``exponential`` schedule (1: a smooth decay;
  ``exponential`` only)."""
  steps: Optional[PositiveInt] = None
  """Length in steps of the ``linear`` and ``cosine`` schedules; null: ``train.steps``."""
  slope: bool = False
  """Slope annealing: the vae task divides its encoder's logits by the step's
  temperature and the estimator runs at temperature 1 (see above); needs an estimator
  with a sampling temperature (e.g. ``straight_through``)."""


OptimizerName = Literal["adam", "sgd"]
Momentum = Annotated[float, Field(ge=0, lt=1)]
DecayRate = Annotated[float, Field(gt=0, le=1)]


class Optimizer(_Schema):
  """Adam or SGD (with ``momentum``); the rate decays as ``learning_rate *
  decay_rate ** floor(step / decay_steps)``. Control variates (RELAX, REBAR, NVIL)
  use ``cv_learning_rate`` (default: ``learning_rate``)."""
  name: OptimizerName = "adam"
  """``adam`` (``optax.adam``) or ``sgd`` (``optax.sgd`` with ``momentum``), for the
  model's parameters and the control variate's alike."""
  learning_rate: Positive = 1e-3
  """The model's learning rate at step 0 (before any decay); ``sweep.learning_rates``
  replaces it."""
  momentum: Momentum = 0.9
  """The momentum of ``sgd`` (0: plain SGD); ignored by ``adam``."""
  decay_rate: DecayRate = 1.0
  """Factor applied to the learning rates every ``decay_steps`` steps (staircase);
  1: no decay."""
  decay_steps: PositiveInt = 1000
  """Steps between two decays of the learning rates."""
  cv_learning_rate: Optional[Positive] = None
  """Learning rate at step 0 of the control variate's learned parameters (RELAX's,
  REBAR's with their temperature, an NVIL baseline's), with the same optimizer and
  decay; null: ``learning_rate``."""


class OptimizerOverride(_Schema):
  """The optimizer fields one estimator changes; a field left unset (null) keeps the
  config's value. E.g. ``{decay_rate: 1.0}``: this estimator's rate does not decay."""
  name: Optional[OptimizerName] = None
  """Replaces ``optimizer.name`` for this estimator; null: the config's."""
  learning_rate: Optional[Positive] = None
  """Replaces ``optimizer.learning_rate``; null: the config's. Not allowed together with
  ``sweep.learning_rates``."""
  momentum: Optional[Momentum] = None
  """Replaces ``optimizer.momentum``; null: the config's."""
  decay_rate: Optional[DecayRate] = None
  """Replaces ``optimizer.decay_rate``; null: the config's."""
  decay_steps: Optional[PositiveInt] = None
  """Replaces ``optimizer.decay_steps``; null: the config's."""
  cv_learning_rate: Optional[Positive] = None
  """Replaces ``optimizer.cv_learning_rate``; null: the config's."""

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
  """A name of ``gumbax.estimators.names()`` (``python -m experiments list`` shows them);
  an entry may be this name alone, e.g. ``estimator: rloo``."""
  options: dict[str, Any] = {}
  """Keyword arguments of the estimator, as ``gumbax.estimators.get`` takes them (e.g.
  ``{num_samples: 4}`` for ``rloo``); not the temperature, which comes from a
  ``temperature`` section (REBAR's and RELAX's ``lambda_init`` from its ``init``)."""
  temperature: Optional[Temperature] = None
  """This estimator's temperature section, in place of the config's; null: the
  config's."""
  optimizer: Optional[OptimizerOverride] = None
  """The optimizer fields this estimator changes; null: the config's optimizer as it
  is."""
  label: Optional[str] = None
  """Its name in member folders and tables; null: ``name(option=value, ...)``. Two
  entries of one estimator with the same options need different labels."""
  tasks: Optional[list[Literal["toy", "vae", "structured_output", "feature_selection"]]] = None
  """The names of the sweep's tasks this entry runs on; null: every task it can
  train."""

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
  """The length of training and how often it logs, evaluates and checkpoints."""
  steps: PositiveInt = 1000
  """Training steps of every member (a multiple of ``log_every``); also the length of a
  ``linear`` or ``cosine`` temperature schedule without ``steps``."""
  batch_size: PositiveInt = 100
  """Examples per training step (and in a variance study's fixed batch), sharded over
  the devices; the toy task has no data and ignores it."""
  log_every: PositiveInt = 10
  """Steps per jitted chunk (one ``lax.scan``). After each chunk a training row is
  written (the loss averaged over the chunk, the learning rate, the estimator's
  temperature if it has one, the task's probes) and a non-finite loss stops its member."""
  eval_every: Annotated[int, Field(ge=0)] = 1000
  """Steps between evaluations on the task's splits (a multiple of ``log_every``); 0:
  none during training. The final evaluation after the last step always runs."""
  checkpoint_every: PositiveInt = 1000
  """Steps between checkpoints (a multiple of ``log_every``; one is also written after
  the last step, and the newest two are kept); a resumed run starts from the newest."""

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

  ``source: test_file`` is the protocol of Abid et al. (2019): the 10,000 images of
  the MNIST test file, shuffled with ``split_seed``, the first ``test_file_train`` for
  training (its last ``validation_size`` held out as ``valid``) and the rest ``test``.

  ``dir`` (default ``$GUMBAX_DATA_DIR``, else ``~/.cache/gumbax/mnist``) holds the
  four IDX files; missing ones are downloaded from ``mirrors`` (default
  ``experiments.data.MIRRORS``) when ``download`` is true. ``if_missing: skip`` runs
  the members that need no MNIST when it cannot be had, instead of failing.
  """
  dir: Optional[str] = None
  """The folder holding the four MNIST IDX files, each raw or ``.gz`` (``~`` is
  expanded); null: ``$GUMBAX_DATA_DIR``, else ``$XDG_CACHE_HOME/gumbax/mnist``, else
  ``~/.cache/gumbax/mnist``."""
  binarization: Literal["fixed", "dynamic", "none"] = "fixed"
  """``fixed``: pixel p is 1 with probability p/255, drawn once with
  ``binarization_seed``; ``dynamic``: every training batch draws its pixels anew, with
  the same probabilities (validation and test use the fixed binarization); ``none``:
  the grey levels p/255 in [0, 1] for every split."""
  binarization_seed: int = 0
  """Seed of the fixed binarization of the training file (the test file uses this seed
  + 1); the training seed (``seed``) does not change it."""
  validation_size: Annotated[int, Field(ge=0)] = 10000
  """How many of the 60,000 images of the MNIST training file (the last ones) are held
  out as the ``valid`` split (fewer than 60,000); with ``source: test_file``, how many
  of the ``test_file_train`` training images (fewer than that); 0: no validation split,
  evaluations on ``test`` only."""
  source: Literal["train_file", "test_file"] = "train_file"
  """``train_file``: train and validation from the 60,000-image training file, test =
  the 10,000-image test file; ``test_file``: all three from the test file, split as
  above (Abid et al. 2019)."""
  test_file_train: Annotated[int, Field(ge=1, le=9999)] = 4000
  """With ``source: test_file``: how many of the shuffled test-file images are for
  training and validation (the paper: 4,000); the other ones are ``test``."""
  split_seed: int = 0
  """With ``source: test_file``: the seed of the shuffle (a PCG64 permutation) before
  the split; the training seed (``seed``) does not change it."""
  train_examples: Optional[PositiveInt] = None
  """How many images of the training split (the first ones) training draws from; null:
  all of them (60,000 - ``validation_size``)."""
  download: bool = True
  """Download missing files from ``mirrors``; false: a missing file is an error (or,
  with ``if_missing: skip``, skips the MNIST members)."""
  mirrors: Optional[list[str]] = None
  """Base URLs tried in order for each missing file, each checked against its SHA-256;
  null: ``experiments.data.MIRRORS``."""
  if_missing: Literal["error", "skip"] = "error"
  """When MNIST can be neither found nor downloaded: ``error`` stops ``run`` before
  anything is written; ``skip`` runs the other members and names the skipped ones in
  one line."""

  @pydantic.model_validator(mode="after")
  def _split_sizes(self):
    if self.source == "test_file" and self.validation_size >= self.test_file_train:
      raise ValueError(
          f"data.validation_size ({self.validation_size}) must be smaller than "
          f"data.test_file_train ({self.test_file_train}) with source: test_file: it is "
          "held out of those training images")
    if self.source == "train_file" and self.validation_size >= 60000:
      raise ValueError(f"data.validation_size ({self.validation_size}) must be smaller than "
                       "the 60,000 images of the MNIST training file")
    return self


class Sweep(_Schema):
  """Lists whose every combination runs: one member per (task, estimator, temperature,
  learning rate, seed); a list left null is the config's single value."""
  tasks: Optional[list[TaskConfig]] = None
  """Task sections, each as ``task``; null: ``[task]``. A task an estimator cannot
  train is left out for it with a note."""
  estimators: Optional[list[EstimatorSpec]] = None
  """Estimator entries, each as ``estimator`` (a name alone or a mapping); null:
  ``[estimator]``."""
  seeds: Optional[list[int]] = None
  """Seeds, each replacing ``seed``; null: ``[seed]``. Members that differ only by seed
  are pooled in tables and, with ``seeds_vectorized``, run as one program."""
  temperatures: Optional[list[Positive]] = None
  """Initial temperatures, each replacing ``temperature.init`` (an estimator's own
  ``temperature`` section's too); null: ``temperature.init``."""
  learning_rates: Optional[list[Positive]] = None
  """Learning rates, each replacing ``optimizer.learning_rate`` (and so a null
  ``cv_learning_rate``); null: ``optimizer.learning_rate``. An estimator entry then may
  not set its own."""


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
  """The estimator entry that trains the reference run whose parameters are measured;
  null: ``estimator``."""
  checkpoints: list[Annotated[int, Field(ge=0)]] = [0]
  """Training steps of the reference run at which the estimators are measured (0: the
  initial parameters); multiples of ``train.log_every``."""
  num_samples: Annotated[int, Field(ge=2)] = 1000
  """Gradient samples per estimator at each checkpoint, on the same fixed batch of
  ``train.batch_size`` examples."""
  chunk_size: PositiveInt = 100
  """Gradient samples computed at once (one ``vmap``); bounds memory and changes the
  results only by float rounding."""
  cv_steps: Annotated[int, Field(ge=0)] = 0
  """Steps of Adam on the variance objective that adapt an estimator's control variate
  at each checkpoint before it is measured (parameters and batch fixed); 0: the
  control variate as initialized."""
  cv_learning_rate: Positive = 0.01
  """The constant Adam learning rate of those ``cv_steps``."""
  reference: Literal["auto", "exact", "estimator"] = "auto"
  """The gradient that bias and MSE are measured against: ``exact`` enumerates every
  configuration (small enough on the toy task only); ``estimator`` is the mean of
  ``reference_samples`` draws of ``reference_estimator``; ``auto``: ``exact`` on the toy
  task, else ``estimator``."""
  reference_estimator: EstimatorSpec = EstimatorSpec(name="rloo", options={"num_samples": 10})
  """The unbiased estimator whose mean is the ``estimator`` reference; its squared
  standard error is reported and subtracted in ``debiased_squared_bias``."""
  reference_samples: Annotated[int, Field(ge=2)] = 10000
  """Draws of ``reference_estimator`` averaged into the reference gradient."""


class Config(_Schema):
  """A run: one task, estimator, temperature and optimizer, or a sweep over them."""
  name: str
  """The run's name: ``runs/NAME`` is its folder unless ``--out`` says otherwise;
  a config file's name (without ``.yaml``) when not given."""
  description: str = ""
  """Free text; ``python -m experiments list`` shows its first line."""
  task: TaskConfig = ToyTask()
  """The task (its ``name`` picks the schema, ``toy`` when left out); ``sweep.tasks``
  replaces it."""
  estimator: EstimatorSpec = EstimatorSpec()
  """The estimator (a registry name alone or a mapping); ``sweep.estimators`` replaces
  it."""
  temperature: Temperature = Temperature()
  """The temperature schedule; an estimator's own ``temperature`` section replaces it."""
  optimizer: Optimizer = Optimizer()
  """The optimizer of the model and of the control variate."""
  train: Train = Train()
  """Training length and the periods of logging, evaluation and checkpoints."""
  data: Data = Data()
  """MNIST for the ``vae``, ``structured_output`` and ``feature_selection`` tasks (the
  toy task has no data)."""
  seed: int = 0
  """The seed every random number of a member derives from (parameters, batches,
  gradient noise, evaluations); ``sweep.seeds`` replaces it."""
  seeds_vectorized: bool = False
  """Train the members that differ only by seed as one ``vmap``-ped program (one
  compilation, seeds in parallel); false: one member at a time."""
  sweep: Sweep = Sweep()
  """Values to run in every combination."""
  variance: VarianceStudy = VarianceStudy()
  """Settings of ``python -m experiments variance`` (ignored by ``run``)."""


SLOPE_TASKS = ("vae",)  # the tasks whose logits slope annealing can temper


def incompatibility(task, spec: EstimatorSpec,
                    temperature: Optional[Temperature] = None) -> Optional[str]:
  """Why ``spec`` cannot train ``task`` (None when it can); ``temperature`` is the
  config's section, which ``spec``'s own replaces."""
  if spec.name == "exact" and task.name != "toy":
    return f"'exact' enumerates every configuration; only the toy task is small enough ({task.name!r})"
  if (task.name == "feature_selection" and task.selector == "top_k"
      and spec.name not in TOP_K_ESTIMATORS):
    return (f"the top_k selector draws a relaxed k-subset (gumbax.relaxed_top_k), a pathwise "
            f"sample: only {sorted(TOP_K_ESTIMATORS)} train it ({spec.name!r})")
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
        model = {"toy": ToyTask, "vae": VaeTask, "structured_output": StructuredTask,
                 "feature_selection": FeatureSelectionTask}[part]
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
