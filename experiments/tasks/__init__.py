"""The tasks: toy, vae, structured_output, feature_selection (see each module)."""

from __future__ import annotations

from experiments.tasks.base import Task

__all__ = ["MNIST_TASKS", "Task", "make_task"]

MNIST_TASKS = ("vae", "structured_output", "feature_selection")  # the tasks that train on MNIST


def _classes() -> dict[str, type[Task]]:
  from experiments.tasks.feature_selection import FeatureSelection
  from experiments.tasks.structured import StructuredOutput
  from experiments.tasks.toy import Toy
  from experiments.tasks.vae import Vae
  return {"toy": Toy, "vae": Vae, "structured_output": StructuredOutput,
          "feature_selection": FeatureSelection}


def make_task(config) -> Task:
  """The task of a member config (data-backed tasks load their data here).

  Raises:
    experiments.data.MnistNotFoundError: MNIST is needed and cannot be found or downloaded.
  """
  cls = _classes()[config.task.name]
  return cls(config.task, batch_size=config.train.batch_size, data_config=config.data,
             slope_annealing=config.temperature.slope)

