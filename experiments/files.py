"""Files of a run folder: atomic writes, the metrics log, checkpoints.

Everything a run writes survives a kill at any moment: whole files are written to a
temporary name in the same folder and renamed (``os.replace`` is atomic on POSIX),
and ``metrics.jsonl`` only grows by whole lines that are flushed as they are written
(a line cut by a kill is dropped when the member resumes).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import uuid
from typing import Any

import flax.serialization
import jax
import numpy as np

CHECKPOINT_PREFIX = "checkpoint-"
KEEP_CHECKPOINTS = 2


def write_atomic(path: pathlib.Path, data: bytes | str) -> None:
  """Writes ``data`` to ``path`` so that readers see the old file or the new one.

  The temporary file is created with ``open(..., "xb")``, so the result has the
  permissions of any new file under the user's umask (``tempfile`` would make it 0600).
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  raw = data.encode() if isinstance(data, str) else data
  tmp = temporary_name(path)
  try:
    with open(tmp, "xb") as handle:
      handle.write(raw)
      handle.flush()
      os.fsync(handle.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def temporary_name(path: pathlib.Path) -> pathlib.Path:
  """A unique hidden name beside ``path`` (same file system, so ``os.replace`` is atomic)."""
  return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def write_json(path: pathlib.Path, obj: Any) -> None:
  """Writes strict JSON (non-finite numbers become ``null``, see :func:`strict_row`)."""
  write_atomic(path, json.dumps(_strict(_plain(obj)), indent=2, sort_keys=True,
                                allow_nan=False) + "\n")


def _plain(obj):
  """JSON-ready copy: NumPy / JAX scalars to Python numbers."""
  if isinstance(obj, dict):
    return {str(k): _plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_plain(v) for v in obj]
  if isinstance(obj, (np.ndarray, jax.Array)) and np.ndim(obj) == 0:
    obj = np.asarray(obj).item()
  if isinstance(obj, np.generic):
    obj = obj.item()
  return obj


def _strict(obj):
  """``obj`` with every non-finite float replaced by ``None`` (JSON ``null``)."""
  if isinstance(obj, dict):
    return {k: _strict(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_strict(v) for v in obj]
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def strict_row(row: dict) -> dict:
  """A metrics row as strict JSON: a top-level value that is NaN or infinite becomes
  ``null`` and is named in ``row["nonfinite"]`` (``{"loss": "nan"}``, ``"inf"``,
  ``"-inf"``), so ``jq`` and strict parsers read every line and nothing is lost."""
  row = _plain(row)
  nonfinite = {k: str(v) for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)}
  row = _strict(row)
  if nonfinite:
    row["nonfinite"] = nonfinite
  return row


class MetricsLog:
  """Appends one JSON object per line to ``metrics.jsonl`` and flushes each line."""

  def __init__(self, path: pathlib.Path):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._handle = open(self.path, "a", encoding="utf-8")

  def write(self, row: dict) -> None:
    self._handle.write(json.dumps(strict_row(row), allow_nan=False) + "\n")
    self._handle.flush()

  def close(self) -> None:
    self._handle.close()


def read_jsonl(path: pathlib.Path) -> list[dict]:
  """The complete lines of a JSON-lines file (a line cut by a kill is skipped)."""
  rows = []
  path = pathlib.Path(path)
  if not path.exists():
    return rows
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows


def truncate_metrics(path: pathlib.Path, last_step: int) -> None:
  """Keeps the complete rows up to ``last_step`` (inclusive): the state of a checkpoint."""
  rows = [r for r in read_jsonl(path) if r.get("step", math.inf) <= last_step]
  write_atomic(path, "".join(json.dumps(strict_row(r), allow_nan=False) + "\n" for r in rows))


def save_checkpoint(folder: pathlib.Path, step: int, state: Any, meta: dict) -> None:
  """Writes ``checkpoint-STEP.msgpack`` atomically; keeps the newest two."""
  payload = {"step": step, "meta": json.dumps(_strict(_plain(meta)), allow_nan=False),
             "state": flax.serialization.to_state_dict(jax.device_get(state))}
  write_atomic(folder / f"{CHECKPOINT_PREFIX}{step}.msgpack",
               flax.serialization.msgpack_serialize(payload))
  for old in checkpoint_steps(folder)[:-KEEP_CHECKPOINTS]:
    (folder / f"{CHECKPOINT_PREFIX}{old}.msgpack").unlink(missing_ok=True)


def checkpoint_steps(folder: pathlib.Path) -> list[int]:
  """Steps of the checkpoints in ``folder``, ascending."""
  steps = []
  for path in pathlib.Path(folder).glob(f"{CHECKPOINT_PREFIX}*.msgpack"):
    stem = path.stem[len(CHECKPOINT_PREFIX):]
    if stem.isdigit():
      steps.append(int(stem))
  return sorted(steps)


def read_checkpoint(folder: pathlib.Path, step: int) -> dict:
  """The raw checkpoint at ``step``: ``{"state": state dict, "meta": JSON text}``."""
  raw = (pathlib.Path(folder) / f"{CHECKPOINT_PREFIX}{step}.msgpack").read_bytes()
  return flax.serialization.msgpack_restore(raw)


def load_checkpoint(folder: pathlib.Path, step: int, template: Any) -> tuple[Any, dict]:
  """The state (shaped like ``template``) and metadata saved at ``step``."""
  payload = read_checkpoint(folder, step)
  state = flax.serialization.from_state_dict(template, payload["state"])
  return state, json.loads(payload["meta"])


def load_params(folder: pathlib.Path, step: int, template: Any) -> Any:
  """The model parameters (shaped like ``template``) of the checkpoint at ``step``."""
  params = read_checkpoint(folder, step)["state"]["params"]
  return flax.serialization.from_state_dict(template, params)
