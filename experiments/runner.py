"""Trains every sweep member of a config and writes the run folder.

One mechanism for all tasks and estimators (:class:`experiments.program.Program`):
a training step is ``task.gradients`` (the estimator's surrogate gradient and the
control variate's variance gradient) followed by optax updates; ``log_every`` steps
run as one ``lax.scan``, and the seeds of a group run as one ``vmap`` (a group is
one seed unless ``seeds_vectorized``). The batch axis is sharded over every device
of every process (:mod:`experiments.distributed`); process 0 alone writes the run
folder. Keys derive from the seed and the step alone, so a resumed member computes
the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from experiments import config as cfg_lib
from experiments import console
from experiments import data as data_lib
from experiments import distributed
from experiments import files
from experiments import sweep
from experiments.program import Program, evaluation_key
from experiments.tasks import MNIST_TASKS, make_task

__all__ = ["run"]


def _slice(tree, i):
  return jax.tree_util.tree_map(lambda x: x[i], tree)


class _NoLog:
  """The metrics log of a process that does not write the run folder."""

  def write(self, row: dict) -> None:
    del row

  def close(self) -> None:
    pass


class _MemberFiles:
  """One member's folder: metrics log, summary, checkpoints. Only the writing process
  (:func:`experiments.distributed.is_writer`) touches the files; on the others every
  method is a no-op and :meth:`previous_status` is None."""

  def __init__(self, folder: pathlib.Path, member: sweep.Member):
    self.folder, self.member = folder, member
    self.writer = distributed.is_writer()
    if self.writer:
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
    return json.loads(path.read_text()).get("status") if self.writer and path.exists() else None

  def open(self, resume_step: int):
    if not self.writer:
      self.log = _NoLog()
      return
    files.truncate_metrics(self.folder / "metrics.jsonl", resume_step)
    self.log = files.MetricsLog(self.folder / "metrics.jsonl")

  def write_summary(self, **updates):
    self.summary.update(updates)
    if self.writer:
      files.write_json(self.folder / "summary.json", self.summary)

  def save_checkpoint(self, step: int, state, meta: dict) -> None:
    """Writes the member's (fully replicated) state at ``step``; on process 0 only."""
    if self.writer:
      files.save_checkpoint(self.folder, step, state, meta)

  def close(self):
    if self.log is not None:
      self.log.close()


def _seed_keys(members: list[sweep.Member]) -> jax.Array:
  """The members' seed keys, stacked for the vectorized program."""
  return jax.random.wrap_key_data(
      jnp.stack([jax.random.key_data(jax.random.key(m.config.seed)) for m in members]))


def _resume(member_files: list[_MemberFiles], todo: list[bool], state, replicated):
  """``(state, start step, wall time so far)``: the newest checkpoint every pending member
  has, loaded into its slice of ``state``; ``(state, 0, 0.0)`` when there is none.
  Process 0 reads the checkpoints and sends the state to the others."""
  start = 0
  if distributed.is_writer():
    pending = [f for f, t in zip(member_files, todo) if t]
    common = set.intersection(*[set(files.checkpoint_steps(f.folder)) for f in pending])
    start = max(common, default=0)
  start = int(distributed.broadcast(np.int32(start)))
  if not start:
    return state, 0, 0.0
  host, elapsed, slices = jax.device_get(state), 0.0, []
  for i, f in enumerate(member_files):  # finished members keep their initial state (ignored)
    slice_i = _slice(host, i)
    if todo[i] and f.writer:
      slice_i, meta = files.load_checkpoint(f.folder, start, slice_i)
      elapsed = meta.get("wall_time", 0.0)
    slices.append(slice_i)
  if distributed.is_writer():
    console.say(f"[{member_files[0].member.group}] resuming from the checkpoint at step {start}")
  stacked = distributed.broadcast(jax.tree_util.tree_map(lambda *xs: np.stack(xs), *slices))
  return distributed.replicate(stacked, replicated), start, elapsed


def _log_chunk(program: Program, member_files, alive, losses, probes, begin: int, end: int,
               wall: float) -> None:
  """Writes each live member's training row after step ``end``; a member whose loss
  became non-finite in the chunk is stopped (status ``nan``) with a message."""
  for i, f in enumerate(member_files):
    if not alive[i]:
      continue
    row = {"step": end, "split": "train", "wall_time": wall,
           "loss": float(np.mean(losses[i])), "learning_rate": float(program.lr(end - 1))}
    if program.uses_temperature:
      row["temperature"] = float(program.tau(end - 1))
    row.update({k: float(v[i]) for k, v in probes.items()})
    f.log.write(row)
    bad = ~np.isfinite(losses[i])
    if bad.any():
      first = begin + 1 + int(np.argmax(bad))
      message = (f"loss became {losses[i][bad][0]} at step {first}; this member stopped there. "
                 f"Its metrics up to step {end} are in {f.folder / 'metrics.jsonl'}.")
      console.say(f"[{f.member.id}] {message}")
      f.write_summary(status="nan", message=message, steps=first, wall_time=wall)
      alive[i] = False


def _train_group(program: Program, members: list[sweep.Member], run_dir: pathlib.Path,
                 progress: bool) -> None:
  c = program.config
  member_files = [_MemberFiles(run_dir / "members" / m.id, m) for m in members]
  todo = [f.previous_status() not in ("completed", "nan") for f in member_files]
  todo = [bool(t) for t in distributed.broadcast(np.array(todo, np.int32))]  # process 0's
  if not any(todo):
    return
  # Data and state committed to the mesh like the chunk's outputs, so the first chunk
  # compiles the same program as every later one (an uncommitted input compiles a copy).
  replicated = NamedSharding(program.mesh, PartitionSpec())
  data = program.task.data()
  if data is not None:
    data = distributed.replicate(data, replicated)
  seed_keys = _seed_keys(members)
  state = distributed.replicate(program.init(seed_keys, data), replicated)
  state, start, elapsed = _resume(member_files, todo, state, replicated)
  alive = np.array(todo)  # finished members of a partly finished group are left untouched
  for f in (f for f, a in zip(member_files, alive) if a):
    f.open(start)
    f.write_summary(steps=start, wall_time=elapsed)
  steps, every = c.train.steps, c.train.log_every
  bar = console.progress_bar(progress and distributed.is_writer(), steps, start, members[0].group)
  t0 = time.perf_counter() - elapsed
  try:
    for begin in range(start, steps, every):
      end = begin + every
      state, losses = program.chunk(state, seed_keys, begin, every, data)
      losses = np.asarray(losses)
      probes = {k: np.asarray(v) for k, v in program.probe(state, seed_keys, end, data).items()}
      wall = time.perf_counter() - t0
      _log_chunk(program, member_files, alive, losses, probes, begin, end, wall)
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
            f.save_checkpoint(end, _slice(state, i), {"wall_time": wall})
            f.write_summary(steps=end, wall_time=wall)
    else:
      wall = time.perf_counter() - t0
      _evaluate(program, state, seed_keys, member_files, alive, steps, wall, final=True)
      for f in (f for f, a in zip(member_files, alive) if a):
        f.write_summary(status="completed", steps=steps, wall_time=wall,
                        message=f"completed {steps} steps")
  finally:
    if bar is not None:
      bar.close()
    for f in member_files:
      f.close()


def _evaluate(program, state, seed_keys, member_files, alive, step, wall, *, final):
  task = program.task
  temperature = program.evaluation_temperature(step)
  for i, f in enumerate(member_files):
    if not alive[i]:
      continue
    params = _slice(state, i)["params"]
    final_metrics = {}
    if final and f.writer:
      last = [r for r in files.read_jsonl(f.folder / "metrics.jsonl") if r.get("split") == "train"]
      if last:
        final_metrics["train/loss"] = last[-1]["loss"]
    for split in task.eval_splits:
      samples = task.eval_samples(final)
      metrics = task.evaluate(params, evaluation_key(seed_keys[i], step, split), split, samples,
                              final, temperature)
      f.log.write({"step": step, "split": split, "wall_time": wall, "final": final, **metrics})
      final_metrics.update({f"{split}/{k}": v for k, v in metrics.items() if k != "iw_samples"})
    if final:
      artifacts = task.artifacts(params)
      if artifacts and f.writer:
        files.write_json(f.folder / "artifacts.json", artifacts)
      f.summary["final"] = final_metrics
      if task.sampled_eval:
        f.summary["final_eval_samples"] = {s: task.eval_samples(True) for s in task.eval_splits}


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
  members, skipped = sweep.expand(config)
  for note in skipped if distributed.is_writer() else ():
    console.say(note)
  groups: dict[str, list[sweep.Member]] = {}
  for m in members:
    groups.setdefault(m.group if config.seeds_vectorized else m.id, []).append(m)
  programs = _programs([group[0] for group in groups.values()], config.data.if_missing)
  if distributed.is_writer():
    files.write_atomic(saved, cfg_lib.to_yaml(config))
  for group in groups.values():
    if group[0].group in programs:
      _train_group(programs[group[0].group], group, run_dir, progress)
  return run_dir


def _programs(firsts: list[sweep.Member], if_missing: str) -> dict[str, Program]:
  """One program per member group (keyed by group name); a group whose data is
  missing is left out when ``if_missing == "skip"`` (said once, in one line)."""
  mesh = Mesh(np.array(jax.devices()), ("data",))
  programs: dict[str, Program] = {}
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
    programs[name] = Program(member.config, task, mesh)
  if error is not None and distributed.is_writer():
    console.say(f"skipped {len(missing)} member group(s) ({', '.join(missing)}): {error.summary} "
         "(data.if_missing: skip)")
  return programs
