"""Trains every sweep member of a config and writes the run folder.

One mechanism for all tasks and estimators: a training step is
``task.gradients`` (the estimator's surrogate gradient and the control variate's
variance gradient) followed by optax updates; ``log_every`` steps run as one
``lax.scan``, and the seeds of a group run as one ``vmap`` (a group is one seed
unless ``seeds_vectorized``). The batch axis is sharded over every local device.
Keys derive from the seed and the step alone, so a resumed member computes the
same numbers as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gumbax
from experiments import config as cfg_lib
from experiments import data as data_lib
from experiments import files
from experiments.tasks import MNIST_TASKS, make_task

__all__ = ["run"]


def _say(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def temperature_schedule(config: cfg_lib.Config):
  t = config.temperature
  if t.schedule == "constant":
    return gumbax.schedules.constant(t.init)
  if t.schedule == "exponential":
    return gumbax.schedules.exponential_annealing(t.init, t.rate, t.final, t.every)
  steps = t.steps or config.train.steps
  if t.schedule == "linear":
    return gumbax.schedules.linear(t.init, t.final, steps)
  return gumbax.schedules.cosine(t.init, t.final, steps)


def _optimizer(config: cfg_lib.Config, learning_rate: float):
  o = config.optimizer
  schedule = optax.exponential_decay(learning_rate, o.decay_steps, o.decay_rate, staircase=True)
  if o.name == "adam":
    return optax.adam(schedule), schedule
  return optax.sgd(schedule, momentum=o.momentum), schedule


def make_estimator(config: cfg_lib.Config):
  """The config's estimator. A sampling temperature is not part of it (the program
  passes the schedule's ``tau(step)`` to every call); REBAR's and RELAX's learned
  temperature starts at ``temperature.init`` (their ``lambda_init``)."""
  spec = config.estimator
  options = dict(spec.options)
  if cfg_lib.learned_temperature(spec.name):
    options["lambda_init"] = config.temperature.init
  return gumbax.estimators.get(spec.name, distribution=config.task.distribution, **options)


@dataclasses.dataclass
class _Program:
  """The jitted functions of one group (members that differ only by seed)."""
  config: cfg_lib.Config
  task: Any
  mesh: Mesh

  def __post_init__(self):
    c = self.config
    self.estimator = make_estimator(c)
    self.scheduled = cfg_lib.scheduled_temperature(c.estimator.name)
    self.tau = temperature_schedule(c)
    self.opt, self.lr = _optimizer(c, c.optimizer.learning_rate)
    self.cv_opt, _ = _optimizer(c, c.optimizer.cv_learning_rate or c.optimizer.learning_rate)
    self.init = jax.jit(jax.vmap(self._init_one, in_axes=(0, None)))
    self.chunk = jax.jit(self._chunk, static_argnums=3, donate_argnums=0)
    self.probe = jax.jit(jax.vmap(self._probe_one, in_axes=(0, 0, None, None)))

  def temperature_at(self, step):
    """The estimator's temperature argument at ``step``: the schedule's ``tau(step)``
    for an estimator with a sampling temperature, None for the others."""
    return self.tau(step) if self.scheduled else None

  def _shard(self, batch):
    devices = self.mesh.devices.size

    def constrain(x):
      if devices > 1 and x.ndim and x.shape[0] % devices == 0:
        spec = PartitionSpec("data", *([None] * (x.ndim - 1)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))
      return x
    return jax.tree_util.tree_map(constrain, batch)

  def _init_one(self, seed_key, data):
    k_params, k_cv = jax.random.split(jax.random.fold_in(seed_key, 0))
    params = self.task.init(k_params)
    batch = self.task.batch(jax.random.fold_in(seed_key, 4), jnp.zeros((), jnp.int32), data)
    cv = self.task.init_cv(self.estimator, k_cv, params, batch)
    return {"params": params, "opt": self.opt.init(params), "cv": cv,
            "cv_opt": self.cv_opt.init(cv.get("params", {}))}

  def _step(self, state, seed_key, step, data):
    k_grad = jax.random.fold_in(jax.random.fold_in(seed_key, 1), step)
    batch = self._shard(self.task.batch(jax.random.fold_in(seed_key, 4), step, data))
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
    key = jax.random.fold_in(jax.random.fold_in(seed_key, 2), step)
    return self.task.probe(self.estimator, key, state["params"], state["cv"],
                           self.temperature_at(step))


def _slice(tree, i):
  return jax.tree_util.tree_map(lambda x: x[i], tree)


def _stack(trees):
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


class _MemberFiles:
  """One member's folder: metrics log, summary, checkpoints."""

  def __init__(self, folder: pathlib.Path, member: cfg_lib.Member):
    self.folder, self.member = folder, member
    folder.mkdir(parents=True, exist_ok=True)
    files.write_atomic(folder / "config.yaml", cfg_lib.to_yaml(member.config))
    self.summary = {"member": member.id, "task": member.task_label,
                    "distribution": member.config.task.distribution,
                    "estimator": member.config.estimator.title, "seed": member.config.seed,
                    "temperature": member.config.temperature.init,
                    "learning_rate": member.config.optimizer.learning_rate,
                    "hyperparameters": member.config.model_dump(mode="json", exclude={"sweep"}),
                    "devices": jax.device_count(),
                    "status": "running", "message": "", "steps": 0, "wall_time": 0.0, "final": {}}
    self.log = None

  def previous_status(self) -> str | None:
    path = self.folder / "summary.json"
    return json.loads(path.read_text()).get("status") if path.exists() else None

  def open(self, resume_step: int):
    files.truncate_metrics(self.folder / "metrics.jsonl", resume_step)
    self.log = files.MetricsLog(self.folder / "metrics.jsonl")

  def write_summary(self, **updates):
    self.summary.update(updates)
    files.write_json(self.folder / "summary.json", self.summary)

  def close(self):
    if self.log is not None:
      self.log.close()


def _train_group(program: _Program, members: list[cfg_lib.Member], run_dir: pathlib.Path,
                 progress: bool) -> None:
  c = program.config
  member_files = [_MemberFiles(run_dir / "members" / m.id, m) for m in members]
  todo = [f.previous_status() not in ("completed", "nan") for f in member_files]
  if not any(todo):
    return
  data = program.task.data()
  if data is not None:
    data = jax.device_put(data, NamedSharding(program.mesh, PartitionSpec()))
  seed_keys = jnp.stack([jax.random.key_data(jax.random.key(m.config.seed)) for m in members])
  seed_keys = jax.random.wrap_key_data(seed_keys)
  # Committed to the mesh like the chunk's outputs, so the first chunk compiles the
  # same program as every later one (an uncommitted input compiles a second copy).
  replicated = NamedSharding(program.mesh, PartitionSpec())
  state = jax.device_put(program.init(seed_keys, data), replicated)
  pending = [f for f, t in zip(member_files, todo) if t]
  common = set.intersection(*[set(files.checkpoint_steps(f.folder)) for f in pending])
  start, elapsed = 0, 0.0
  if common:
    start = max(common)
    slices = []
    for i, f in enumerate(member_files):  # finished members keep their initial state (ignored)
      slice_i = _slice(state, i)
      if todo[i]:
        slice_i, meta = files.load_checkpoint(f.folder, start, slice_i)
        elapsed = meta.get("wall_time", 0.0)
      slices.append(slice_i)
    state = jax.device_put(_stack(slices), replicated)
    _say(f"[{members[0].group}] resuming from the checkpoint at step {start}")
  alive = np.array(todo)  # finished members of a partly finished group are left untouched
  for i, f in enumerate(member_files):
    if alive[i]:
      f.open(start)
      f.write_summary(steps=start, wall_time=elapsed)
  steps, every = c.train.steps, c.train.log_every
  bar = _progress(progress, steps, start, members[0].group)
  t0 = time.perf_counter() - elapsed
  try:
    for begin in range(start, steps, every):
      end = begin + every
      state, losses = program.chunk(state, seed_keys, begin, every, data)
      losses = np.asarray(losses)
      probes = {k: np.asarray(v) for k, v in program.probe(state, seed_keys, end, data).items()}
      wall = time.perf_counter() - t0
      for i, f in enumerate(member_files):
        if not alive[i]:
          continue
        row = {"step": end, "split": "train", "wall_time": wall,
               "loss": float(np.mean(losses[i])), "learning_rate": float(program.lr(end - 1))}
        if program.scheduled:
          row["temperature"] = float(program.tau(end - 1))
        row.update({k: float(v[i]) for k, v in probes.items()})
        f.log.write(row)
        bad = ~np.isfinite(losses[i])
        if bad.any():
          first = begin + 1 + int(np.argmax(bad))
          message = (f"loss became {losses[i][bad][0]} at step {first}; this member stopped there. "
                     f"Its metrics up to step {end} are in {f.folder / 'metrics.jsonl'}.")
          _say(f"[{f.member.id}] {message}")
          f.write_summary(status="nan", message=message, steps=first, wall_time=wall)
          alive[i] = False
      if not alive.any():
        break
      if bar is not None:
        bar.update(every)
        bar.set_postfix(loss=f"{np.mean(losses[alive]):.4g}")
      final = end == steps
      if c.train.eval_every and end % c.train.eval_every == 0 and not final:
        _evaluate(program, state, seed_keys, member_files, alive, end, wall, final=False)
      if end % c.train.checkpoint_every == 0 or final:
        for i, f in enumerate(member_files):
          if alive[i]:
            files.save_checkpoint(f.folder, end, _slice(state, i), {"wall_time": wall})
            f.write_summary(steps=end, wall_time=wall)
    else:
      wall = time.perf_counter() - t0
      _evaluate(program, state, seed_keys, member_files, alive, steps, wall, final=True)
      for i, f in enumerate(member_files):
        if alive[i]:
          f.write_summary(status="completed", steps=steps, wall_time=wall,
                          message=f"completed {steps} steps")
  finally:
    if bar is not None:
      bar.close()
    for f in member_files:
      f.close()


def eval_key(seed_key: jax.Array, step: int, split: str) -> jax.Array:
  """The key of the evaluation of ``split`` at ``step`` (stream 3 of the seed's key);
  ``python -m experiments evaluate`` uses it to repeat a final evaluation."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(seed_key, 3), step), len(split))


def evaluation_temperature(config: cfg_lib.Config, step: int) -> float:
  """The temperature a model is evaluated at after ``step`` steps: the schedule's at
  the last of them (it matters only with slope annealing, ``temperature.slope``)."""
  if not cfg_lib.scheduled_temperature(config.estimator.name):
    return 1.0
  return float(temperature_schedule(config)(max(step - 1, 0)))


def _evaluate(program, state, seed_keys, member_files, alive, step, wall, *, final):
  task = program.task
  temperature = evaluation_temperature(program.config, step)
  for i, f in enumerate(member_files):
    if not alive[i]:
      continue
    params = _slice(state, i)["params"]
    final_metrics = {}
    if final:
      last = [r for r in files.read_jsonl(f.folder / "metrics.jsonl") if r.get("split") == "train"]
      if last:
        final_metrics["train/loss"] = last[-1]["loss"]
    for split in task.eval_splits:
      samples = task.eval_samples(final)
      metrics = task.evaluate(params, eval_key(seed_keys[i], step, split), split, samples, final,
                              temperature)
      f.log.write({"step": step, "split": split, "wall_time": wall, "final": final, **metrics})
      final_metrics.update({f"{split}/{k}": v for k, v in metrics.items() if k != "iw_samples"})
    if final:
      f.summary["final"] = final_metrics
      if task.sampled_eval:
        f.summary["final_eval_samples"] = {s: task.eval_samples(True) for s in task.eval_splits}


def _progress(enabled, total, initial, desc):
  if not enabled:
    return None
  from tqdm import tqdm
  return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
              file=sys.stderr, mininterval=0.5)


def _same_config(saved: pathlib.Path, config: cfg_lib.Config) -> bool:
  """Whether the run folder's ``config.yaml`` validates to ``config``; compared as
  values, so a folder written before a field with a default was added still matches."""
  try:
    return cfg_lib.load(saved) == config
  except cfg_lib.ConfigError:
    return False


def run(config: cfg_lib.Config, run_dir: str | pathlib.Path, *, progress: bool = True) -> pathlib.Path:
  """Trains every member of ``config`` into ``run_dir`` (resuming what is there).

  Every task is built (and its data loaded or downloaded) before anything is
  written, so a run that fails before training leaves no run folder behind. With
  ``data.if_missing: skip`` the members whose data is missing are skipped with one
  line on stderr, and the data is looked for (and downloaded) once per run.

  Args:
    config: a validated config (``experiments.config.load``).
    run_dir: the run folder; an existing one must hold the same resolved config.
    progress: show a progress bar (step, ETA, loss) on stderr.

  Returns:
    ``run_dir`` as a path.

  Raises:
    experiments.config.ConfigError: ``run_dir`` holds a run of another config.
    experiments.data.MnistNotFoundError: MNIST is missing, cannot be downloaded and
      ``data.if_missing`` is ``error``.
    experiments.data.MnistCorruptError: an MNIST file is corrupt or truncated.
  """
  run_dir = pathlib.Path(run_dir)
  saved = run_dir / "config.yaml"
  if saved.exists() and not _same_config(saved, config):
    raise cfg_lib.ConfigError(
        f"{run_dir} holds a run of a different config ({saved}); resume it with the same "
        "config and overrides, or choose another output folder with --out.")
  members, skipped = cfg_lib.expand(config)
  for note in skipped:
    _say(note)
  groups: dict[str, list[cfg_lib.Member]] = {}
  for m in members:
    groups.setdefault(m.group if config.seeds_vectorized else m.id, []).append(m)
  programs = _programs([group[0] for group in groups.values()], config.data.if_missing)
  files.write_atomic(saved, cfg_lib.to_yaml(config))
  for group in groups.values():
    if group[0].group in programs:
      _train_group(programs[group[0].group], group, run_dir, progress)
  return run_dir


def _programs(firsts: list[cfg_lib.Member], if_missing: str) -> dict[str, _Program]:
  """One program per member group (keyed by group name); a group whose data is
  missing is left out when ``if_missing == "skip"`` (said once, in one line)."""
  mesh = Mesh(np.array(jax.devices()), ("data",))
  programs: dict[str, _Program] = {}
  missing: list[str] = []
  error: data_lib.MnistNotFoundError | None = None
  for member in firsts:
    name = member.group
    if name in programs or name in missing:
      continue
    if error is not None and member.config.task.name in MNIST_TASKS:
      missing.append(name)  # looked for once: the same data would be missing again
      continue
    try:
      task = make_task(member.config)
    except data_lib.MnistNotFoundError as err:
      if if_missing == "error":
        raise
      error = err
      missing.append(name)
      continue
    programs[name] = _Program(member.config, task, mesh)
  if error is not None:
    _say(f"skipped {len(missing)} member group(s) ({', '.join(missing)}): {error.summary} "
         "(data.if_missing: skip)")
  return programs
