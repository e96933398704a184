"""Several processes, one run: JAX's multi-controller runtime for ``run`` and ``variance``.

Every process runs the same program on the global mesh (every device of every
process, :func:`experiments.program.Program`): the parameters, optimizer state and
training data are replicated, each training batch is sharded along its batch axis
over all devices, and XLA reduces the gradients across processes. Process 0 alone
writes the run folder and reads checkpoints; the others receive the resumed state
from it (:func:`broadcast`), so only process 0 needs the run folder.

References:
  JAX, "Multi-process environments"
  (https://docs.jax.dev/en/latest/multi_process.html) and ``jax.distributed.initialize``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["broadcast", "initialize", "is_writer", "replicate"]


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, detect: bool = False,
               heartbeat_timeout: int = 100, initialization_timeout: int = 300) -> None:
  """Joins this process to a distributed run (``jax.distributed.initialize``).

  Either all of ``coordinator_address`` (``HOST:PORT`` of process 0),
  ``num_processes`` and ``process_id`` are given, or ``detect`` lets JAX read them
  from the cluster (SLURM, Open MPI, Kubernetes, TPU pods). CPU devices exchange
  data through the gloo collectives (selected here; other platforms ignore the
  setting). A process that does not reach the coordinator within
  ``initialization_timeout`` seconds, or whose peers stop answering for
  ``heartbeat_timeout`` seconds, fails with an error instead of waiting forever.

  Args:
    coordinator_address: ``HOST:PORT`` on which process 0 serves the coordinator.
    num_processes: the number of processes (``>= 1``).
    process_id: this process's index, ``0 <= process_id < num_processes``.
    detect: let JAX detect the three values from the cluster environment.
    heartbeat_timeout: seconds without a heartbeat after which a peer counts as dead.
    initialization_timeout: seconds to wait for every process to join.

  Raises:
    ValueError: the arguments are incomplete, inconsistent or out of range.

  References:
    ``jax.distributed.initialize``; JAX, "Multi-process environments".
  """
  given = [coordinator_address is not None, num_processes is not None, process_id is not None]
  if detect and any(given):
    raise ValueError("--distributed detects the cluster by itself; drop --coordinator-address, "
                     "--num-processes and --process-id, or drop --distributed.")
  if not detect and not all(given):
    raise ValueError("a distributed run needs all of --coordinator-address HOST:PORT, "
                     "--num-processes N and --process-id I (or --distributed on a cluster "
                     "JAX detects: SLURM, Open MPI, Kubernetes, TPU pods).")
  if not detect:
    host, _, port = coordinator_address.rpartition(":")
    if not host or not port.isdigit():
      raise ValueError(f"--coordinator-address {coordinator_address!r} is not HOST:PORT.")
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"--process-id {process_id} is not in 0..{num_processes - 1} "
                       f"(--num-processes {num_processes}).")
  if heartbeat_timeout < 1 or initialization_timeout < 1:
    raise ValueError("timeouts are whole seconds >= 1.")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             initialization_timeout=initialization_timeout,
                             heartbeat_timeout_seconds=heartbeat_timeout)


def is_writer() -> bool:
  """Whether this process writes the run folder: process 0 (the only one of a
  single-process run)."""
  return jax.process_index() == 0


def broadcast(tree: Any) -> Any:
  """``tree`` as process 0 has it, on every process (host NumPy arrays); ``tree``
  itself in a single-process run. Every process must call it with the same shapes.

  References:
    ``jax.experimental.multihost_utils.broadcast_one_to_all``.
  """
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils
  return multihost_utils.broadcast_one_to_all(tree)


def replicate(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """``tree``'s arrays placed on every device of ``sharding`` (fully replicated).

  One process: ``jax.device_put``. Several: every process passes the same values
  (they load the same data, or received them through :func:`broadcast`), and
  each places them on its own devices of the global array
  (``jax.make_array_from_process_local_data``).

  References:
    ``jax.make_array_from_process_local_data``; JAX, "Multi-process environments".
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def place(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      impl = jax.random.key_impl(x)
      data = place(jax.random.key_data(x))
      return jax.random.wrap_key_data(data, impl=impl)
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))
  return jax.tree_util.tree_map(place, tree)
