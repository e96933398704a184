"""Gradient-variance studies: bias, variance, SNR and cost of estimators along training.

One reference training run (``variance.train_estimator``) provides the parameters at
``variance.checkpoints``; at each of them every estimator of the sweep is measured
on the same fixed batch, so all estimators see the same parameters. The reference
gradient is exact (enumeration) on the toy task and otherwise the mean of
``reference_samples`` draws of an unbiased estimator, whose own standard error is
reported. Sampling uses ``gumbax.diagnostics.gradient_statistics``: vectorized,
chunked (bounded memory) and sharded over local devices. In a run of several
processes (:mod:`experiments.distributed`) the reference training is sharded over
every process's devices, every process measures the same numbers on its own
devices, and process 0 writes the folder.

References:
  Tucker et al., REBAR, 2017 (arXiv 1703.07370), Figure 1; Grathwohl et al.,
  Backpropagation through the Void, 2018 (arXiv 1711.00123), Figures 1 and 3;
  Paulus et al., Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient
  Estimator, 2021 (arXiv 2010.04838); Dong, Mnih, Tucker, DisARM, 2020
  (arXiv 2006.10680).
"""

from __future__ import annotations

import enum
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gumbax
from experiments import config as cfg_lib
from experiments import console
from experiments import distributed
from experiments import files
from experiments import report
from experiments import sweep
from experiments.program import Program, Stream, stream
from experiments.tasks import make_task

__all__ = ["run_variance"]

COLUMNS = ["step", "estimator", "total_variance", "log10_variance", "squared_bias",
           "debiased_squared_bias", "mse", "snr", "cosine", "ms_per_gradient"]


def _check(config: cfg_lib.Config) -> list[cfg_lib.EstimatorSpec]:
  v = config.variance
  if config.sweep.tasks or config.sweep.seeds or config.sweep.learning_rates or config.sweep.temperatures:
    raise cfg_lib.ConfigError(
        "A variance study measures one task at one seed: use `task:`, `seed:` and "
        "`sweep.estimators` only (found sweep.tasks / seeds / learning_rates / temperatures).")
  bad = [s for s in v.checkpoints if s % config.train.log_every]
  if bad:
    raise cfg_lib.ConfigError(
        f"variance.checkpoints {bad} must be multiples of train.log_every ({config.train.log_every}).")
  specs = config.sweep.estimators or [config.estimator]
  train = v.train_estimator or config.estimator
  sloped = [s.title for s in [train, *specs] if (s.temperature or config.temperature).slope]
  if sloped:
    raise cfg_lib.ConfigError(
        f"A variance study compares estimators of one model; slope annealing ({', '.join(sloped)}: "
        "temperature.slope) changes the model's distribution, so it is not measured here.")
  problems = [f"{s.title}: {cfg_lib.incompatibility(config.task, s, config.temperature)}"
              for s in specs if cfg_lib.incompatibility(config.task, s, config.temperature)]
  if problems:
    raise cfg_lib.ConfigError("Estimators that cannot be measured on this task:\n  " + "\n  ".join(problems))
  return specs


class _Key(enum.IntEnum):
  """The streams of a measurement's key: ``fold_in(key, _Key.X)``."""
  CV_INIT = 1    # the control variate's initial parameters
  CV_ADAPT = 2   # its adaptation steps
  SAMPLES = 3    # the gradient samples
  MEASURE = 11   # an estimator's measurement (from a checkpoint's key)


class _Measurer:
  """Jitted measurement functions of one estimator, compiled once for every checkpoint.

  Parameters, control variate, batch and step are arguments (not constants), so
  the programs are reused at every checkpoint.
  """

  def __init__(self, program: Program, settings):
    self.task, self.settings = program.task, settings
    estimator, at = program.estimator, program.temperature_at
    task, n, chunk = program.task, settings.num_samples, settings.chunk_size

    def gradient(params, cv, batch, step, key):
      return task.gradients(estimator, key, params, cv, batch, at(step)).grads

    def stats(params, cv, batch, step, key, reference):
      return gumbax.diagnostics.gradient_statistics(
          lambda k: gradient(params, cv, batch, step, k), key, n, reference=reference,
          chunk_size=chunk)

    def adapt(params, cv, batch, step, key):
      """``cv_steps`` variance-objective steps on the control variate at fixed params."""
      opt = optax.adam(settings.cv_learning_rate)

      def body(carry, i):
        cv, opt_state = carry
        out = task.gradients(estimator, jax.random.fold_in(key, i), params, cv, batch, at(step))
        new_cv = out.cv
        if jax.tree_util.tree_leaves(cv.get("params", {})):
          updates, opt_state = opt.update(out.cv_grads, opt_state, cv["params"])
          new_cv = {**new_cv, "params": optax.apply_updates(cv["params"], updates)}
        return (new_cv, opt_state), None

      carry = (cv, opt.init(cv.get("params", {})))
      return jax.lax.scan(body, carry, jnp.arange(settings.cv_steps))[0][0]

    self.init_cv = jax.jit(lambda params, batch, step, key: task.init_cv(estimator, key, params, batch))
    self.adapt = jax.jit(adapt)
    self.stats = jax.jit(stats)
    self._compiled = None

  def __call__(self, params, batch, step, key, reference):
    """GradientStats at ``params`` and milliseconds per gradient sample.

    The statistics program is compiled ahead of time (once per estimator), so the
    timing covers only its execution: ``num_samples`` vectorized gradients and their
    running statistics, divided by ``num_samples``.
    """
    step = jnp.asarray(step, jnp.int32)
    cv = self.init_cv(params, batch, step, jax.random.fold_in(key, _Key.CV_INIT))
    if cv and self.settings.cv_steps:
      cv = self.adapt(params, cv, batch, step, jax.random.fold_in(key, _Key.CV_ADAPT))
    args = (params, cv, batch, step, jax.random.fold_in(key, _Key.SAMPLES), reference)
    if self._compiled is None:
      self._compiled = self.stats.lower(*args).compile()
    start = time.perf_counter()
    stats = self._compiled(*args)
    jax.block_until_ready(stats)
    return stats, (time.perf_counter() - start) * 1e3 / self.settings.num_samples


def _reference_fn(config, trainer, mesh):
  """``(params, batch, step, key) -> (gradient, squared standard error, name)``."""
  v = config.variance
  kind = v.reference
  if kind == "auto":
    kind = "exact" if config.task.name == "toy" else "estimator"
  if kind == "exact":
    exact = gumbax.estimators.get("exact", distribution=config.task.distribution)
    fn = jax.jit(lambda params, batch, key: trainer.task.gradients(exact, key, params, {}, batch).grads)
    return lambda params, batch, step, key: (fn(params, batch, key), 0.0, "exact")
  spec = v.reference_estimator
  program = Program(sweep.for_estimator(config, spec), trainer.task, mesh)
  measurer = _Measurer(program, v.model_copy(update={"num_samples": v.reference_samples}))

  def reference(params, batch, step, key):
    stats, _ = measurer(params, batch, step, key, None)
    se2 = float(sum(jnp.sum(jnp.square(s)) for s in jax.tree_util.tree_leaves(stats.standard_error)))
    return stats.mean, se2, f"{spec.title} x {v.reference_samples}"
  return reference


def _row(step, label, stats, ms, ref_se2):
  mean_norm = math.sqrt(sum(float(jnp.sum(jnp.square(m))) for m in jax.tree_util.tree_leaves(stats.mean)))
  var = float(stats.total_variance)
  sq_bias = float(stats.squared_bias)
  row = {"step": step, "estimator": label, "total_variance": var,
         "log10_variance": math.log10(var) if var > 0 else -math.inf,
         "squared_bias": sq_bias,
         # E||mean - ref||^2 = ||bias||^2 + tr V / n + tr V_ref / n_ref: remove the noise terms.
         "debiased_squared_bias": sq_bias - var / stats.num_samples - ref_se2,
         "mse": float(stats.mse), "snr": mean_norm / math.sqrt(var) if var > 0 else math.inf,
         "cosine": float(stats.cosine), "ms_per_gradient": ms}
  if isinstance(stats.mean, dict):
    for group, values in stats.per_group().items():
      for name, field in (("variance", "total_variance"), ("squared_bias", "squared_bias"),
                          ("mean_cosine", "mean_cosine"), ("mean_norm", "mean_norm"),
                          ("reference_norm", "reference_norm")):
        row[f"{name}/{group}"] = float(values[field])
  return row


def _reference_training(config, task, train_spec):
  """``(trainer, seed key, seed keys, initial state, training data, study batch)``.

  With several processes the training data is replicated on the global mesh (the
  training step is sharded over every process's devices); the study batch is drawn
  from this process's copy, for measurements on its own devices."""
  mesh = Mesh(np.array(jax.devices()), ("data",))
  trainer = Program(sweep.for_estimator(config, train_spec), task, mesh)
  seed_key = jax.random.key(config.seed)
  seed_keys = jax.random.wrap_key_data(jax.random.key_data(seed_key)[None])
  data = train_data = task.data()
  if jax.process_count() > 1 and data is not None:
    train_data = distributed.replicate(data, NamedSharding(mesh, PartitionSpec()))
  state = trainer.init(seed_keys, train_data)
  batch = task.batch(stream(seed_key, Stream.STUDY_BATCH), jnp.zeros((), jnp.int32), data)
  return trainer, seed_key, seed_keys, state, train_data, batch


def run_variance(config: cfg_lib.Config, out_dir: str | pathlib.Path, *, progress: bool = True) -> dict:
  """Measures every estimator of ``config`` at every checkpoint; writes tables and plots.

  Returns:
    The summary dict (also written to ``out_dir/summary.json`` by process 0).
  """
  specs = _check(config)
  out_dir = pathlib.Path(out_dir)
  writer = distributed.is_writer()
  if writer:
    files.write_atomic(out_dir / "config.yaml", cfg_lib.to_yaml(config))
  v = config.variance
  train_spec = v.train_estimator or config.estimator
  task = make_task(config)
  trainer, seed_key, seed_keys, state, train_data, batch = _reference_training(config, task, train_spec)
  reference_fn = _reference_fn(config, trainer, trainer.mesh)
  measurers = [_Measurer(Program(sweep.for_estimator(config, spec), task, trainer.mesh), v)
               for spec in specs]
  rows, t0, done = [], time.perf_counter(), 0
  bar = console.progress_bar(progress and writer, len(v.checkpoints) * len(specs), 0, "variance")
  if writer:
    (out_dir / "variance.jsonl").unlink(missing_ok=True)  # a study is rerun whole, not resumed
  log = files.MetricsLog(out_dir / "variance.jsonl") if writer else None
  try:
    for step in sorted(v.checkpoints):
      while done < step:
        state, _ = trainer.chunk(state, seed_keys, done, config.train.log_every, train_data)
        done += config.train.log_every
      params = jax.tree_util.tree_map(lambda x: x[0], state["params"])
      if jax.process_count() > 1:  # measured on this process's devices: the replicated values, on the host
        params = jax.device_get(params)
      key = jax.random.fold_in(stream(seed_key, Stream.STUDY), step)
      reference, ref_se2, ref_name = reference_fn(params, batch, step, key)
      for spec, measure in zip(specs, measurers):
        stats, ms = measure(params, batch, step, jax.random.fold_in(key, _Key.MEASURE), reference)
        row = _row(step, spec.title, stats, ms, ref_se2) | {
            "reference": ref_name, "reference_se2": ref_se2, "num_samples": v.num_samples}
        rows.append(row)
        if log is not None:
          log.write(row)
        if bar is not None:
          bar.update(1)
          bar.set_postfix(step=step, estimator=spec.title)
  finally:
    if log is not None:
      log.close()
    if bar is not None:
      bar.close()
  summary = {"task": sweep.describe(config.task), "train_estimator": train_spec.title,
             "checkpoints": sorted(v.checkpoints), "num_samples": v.num_samples,
             "batch_size": config.train.batch_size, "devices": jax.device_count(),
             "wall_time": time.perf_counter() - t0, "rows": rows}
  if not writer:
    return summary
  files.write_json(out_dir / "summary.json", summary)
  summary["tables"] = report.write_variance_tables(rows, out_dir, COLUMNS)
  summary["plots"] = report.write_variance_plots(rows, out_dir)
  console.say(f"variance study written to {out_dir}")
  return summary
