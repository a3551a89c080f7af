"""Several processes of one program, one per host: joining them, and the files one of them writes.

Every process runs the same program on its share of a global device mesh (`MeshPlan` over
``jax.devices()``). Results (run JSONs, tables, plots) are written by process 0 alone into an
output directory that every process sees, a shared file system as Orbax's multi-process
checkpoints need too. `main_process_writes` makes a writer do that: the other processes skip it,
and all meet at a barrier before the write (so none has run ahead and found the file early) and
after it (so all then read the finished file); if process 0's write fails, every process raises.
With one process it is the writer itself. Every process decides what to resume from the files it
sees, so the file system must show each process the others' finished writes (as NFS does between
a close and a later open).
"""

import functools
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(
  coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
  """Joins this process to the run (``jax.distributed.initialize``), before any other JAX call.

  Without arguments JAX detects the cluster (Cloud TPU, SLURM, Open MPI). CPU devices reduce over
  gloo, so that several processes on CPUs (e.g. on one machine, for testing) run together.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator, num_processes, process_id)


def is_main_process() -> bool:
  return jax.process_index() == 0


def sync(name: str) -> None:
  """A barrier of every process (nothing with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def main_process_writes(writer: Callable) -> Callable:
  """``writer`` run by process 0 alone, between barriers of every process; the others get None."""

  @functools.wraps(writer)
  def wrapped(*args, **kwargs):
    if jax.process_count() == 1:
      return writer(*args, **kwargs)
    sync(f"before {writer.__name__}")
    result, error = None, None
    if is_main_process():
      try:
        result = writer(*args, **kwargs)
      except Exception as caught:  # re-raised below, once every process knows
        error = caught
    # The "after" barrier, carrying whether the write failed, so that no process waits forever.
    failed = bool(multihost_utils.broadcast_one_to_all(np.array(error is not None)))
    if error is not None:
      raise error
    if failed:
      raise RuntimeError(f"Process 0 failed in {writer.__name__}; see its error.")
    return result

  return wrapped
