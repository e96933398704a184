"""What the MNIST tasks share: data, batches, chunked evaluation, a base class.

Their networks are :mod:`gumbax.networks` MLPs (LeCun-normal weights, zero biases).
"""

from __future__ import annotations

import abc
import functools
import math
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from experiments import data as data_lib
from experiments.tasks.base import Task

# Decoder evaluations per evaluation call (examples x samples); raise it on a GPU.
EVAL_BUDGET = int(os.environ.get("GUMBAX_EVAL_BUDGET", "8192"))


def bernoulli_log_likelihood(logits: jax.Array, x: jax.Array) -> jax.Array:
  """``sum_d log Bernoulli(x_d; sigmoid(logits_d))`` over the last axis (x in [0, 1])."""
  return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


@functools.lru_cache(maxsize=4)
def _splits(data_dir, binarization, binarization_seed, validation_size, download, mirrors,
            source="train_file", test_file_train=4000, split_seed=0):
  return data_lib.load_splits(data_dir, binarization=binarization,
                              binarization_seed=binarization_seed,
                              validation_size=validation_size, download=download,
                              mirrors=mirrors, source=source, test_file_train=test_file_train,
                              split_seed=split_seed)


def load(data_config):
  """The MNIST splits a data config asks for (cached per process, per folder: the
  folder is resolved first, so a changed ``$GUMBAX_DATA_DIR`` is looked at anew)."""
  c = data_config
  mirrors = tuple(c.mirrors) if c.mirrors is not None else data_lib.MIRRORS
  data_dir = str(pathlib.Path(c.dir).expanduser()) if c.dir else str(data_lib.default_data_dir())
  splits = _splits(data_dir, c.binarization, c.binarization_seed, c.validation_size, c.download,
                   mirrors, c.source, c.test_file_train, c.split_seed)
  train = splits.train[:c.train_examples] if c.train_examples else splits.train
  return train, {"valid": splits.valid, "test": splits.test}


def sample_batch(key, step, images, batch_size: int, dynamic: bool) -> jax.Array:
  """A batch drawn uniformly with replacement; Bernoulli pixels when ``dynamic``."""
  key = jax.random.fold_in(key, step)
  k_index, k_pixels = jax.random.split(key)
  idx = jax.random.randint(k_index, (batch_size,), 0, images.shape[0])
  x = images[idx]
  if dynamic:
    x = jax.random.bernoulli(k_pixels, x).astype(jnp.float32)
  return x


def chunked_mean(fn, params, key, images: np.ndarray, num_samples: int,
                 limit: int | None) -> dict[str, float]:
  """Means over examples of ``fn(params, key, chunk, num_samples) -> {name: (chunk,)}``.

  Examples go in chunks of ``EVAL_BUDGET // num_samples`` (the last chunk padded and
  its padding dropped), so memory stays bounded for m = 1000.
  """
  images = images[:limit] if limit else images
  n = images.shape[0]
  size = max(1, EVAL_BUDGET // num_samples)
  size = min(size, n)
  totals: dict[str, float] = {}
  for i, start in enumerate(range(0, n, size)):
    chunk = images[start:start + size]
    valid = chunk.shape[0]
    if valid < size:
      chunk = np.concatenate([chunk, np.zeros((size - valid,) + chunk.shape[1:], chunk.dtype)])
    out = fn(params, jax.random.fold_in(key, i), jnp.asarray(chunk), num_samples)
    for name, values in out.items():
      totals[name] = totals.get(name, 0.0) + float(np.sum(np.asarray(values)[:valid], dtype=np.float64))
  return {name: total / n for name, total in totals.items()}


def log_mean_exp(x: jax.Array, axis: int) -> jax.Array:
  return jax.nn.logsumexp(x, axis=axis) - math.log(x.shape[axis])


class MnistTask(Task):
  """Base of the MNIST tasks: data, batches, discrete latents, chunked evaluation.

  Subclasses define ``init``, the gradients and ``_eval_chunk(params, key, images,
  num_samples, temperature) -> {name: per-example values}``.
  """

  sampled_eval = True

  def __init__(self, config, *, batch_size, data_config, slope_annealing=False):
    super().__init__(config, batch_size=batch_size, data_config=data_config,
                     slope_annealing=slope_annealing)
    if data_config is not None:  # None: batches come from the caller (tests, studies)
      self.train_images, self.eval_images = load(data_config)
    self._eval = jax.jit(self._eval_chunk, static_argnums=3)

  @property
  def eval_splits(self):
    valid = self.data_config is not None and self.data_config.validation_size
    return ("valid", "test") if valid else ("test",)

  @property
  def categorical(self) -> bool:
    return self.distribution == "categorical"

  @property
  def latent_shape(self) -> tuple[int, ...]:
    c = self.config
    return (c.num_latents, c.num_classes) if self.categorical else (c.num_latents,)

  def data(self):
    return jnp.asarray(self.train_images)

  def batch(self, key, step, data):
    return sample_batch(key, step, data, self.batch_size, self.data_config.binarization == "dynamic")

  def draw(self, key, logits):
    """An exact discrete sample (one-hot for categorical latents) as float32."""
    if self.categorical:
      # jax.random.categorical's Gumbel-max, with the noise drawn flat and reshaped: the
      # same numbers (JAX numbers random bits in row-major order of the flattened
      # shape), but XLA's CPU compiler takes about ten times longer over noise of rank
      # 3 or more (here under vmap over the m samples).
      noise = jax.random.gumbel(key, (logits.size,), logits.dtype).reshape(logits.shape)
      return jax.nn.one_hot(jnp.argmax(logits + noise, axis=-1), self.config.num_classes)
    return jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(jnp.float32)

  @abc.abstractmethod
  def _eval_chunk(self, params, key, images, num_samples, temperature):
    """Per-example evaluation metrics of one chunk of images (jitted by the base)."""

  def evaluate(self, params, key, split, num_samples, final, temperature=1.0):
    limit = self.config.final_eval_examples if final else self.config.eval_examples
    fn = functools.partial(self._eval, temperature=jnp.float32(temperature))
    out = chunked_mean(fn, params, key, self.eval_images[split], num_samples, limit)
    return {**out, "iw_samples": num_samples}
