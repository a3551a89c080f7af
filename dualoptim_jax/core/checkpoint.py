"""Orbax checkpoints of pytrees such as `TrainState`, one directory per integer step.

Each step holds two items: ``state``, the tree (``ocp.args.StandardSave``), and ``metadata``, a
JSON dict. Saving is synchronous and atomic: Orbax writes into a temporary directory, renames it
once complete, and only then removes the steps beyond ``max_to_keep``, so a failed or interrupted
save leaves the earlier checkpoints intact.

Restoring reads into a target of the same structure (concrete, or abstract as from
`jax.eval_shape`), so NamedTuples (optax states, `DualState`, `TrainState`) and `nnx.State` with
its Variable types come back as they were saved.
"""

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import orbax.checkpoint as ocp
from etils import epath

T = TypeVar("T")
_STATE = "state"
_METADATA = "metadata"


def _absolute(directory) -> str:
  """Orbax needs absolute paths; URLs such as ``gs://...`` are kept as they are."""
  directory = os.fspath(directory)
  return directory if "://" in directory else os.path.abspath(directory)


def _reader(directory) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(create=False)
  return ocp.CheckpointManager(_absolute(directory), options=options)


def _restore_item(directory, step: int | None, name: str, args: ocp.args.CheckpointArgs) -> Any:
  with _reader(directory) as manager:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f"No checkpoints in {directory}.")
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise FileNotFoundError(
        f"No checkpoint of step {step} in {directory}; it has steps {sorted(steps)}."
      )
    return manager.restore(step, args=ocp.args.Composite(**{name: args}))[name]


def save(
  directory,
  step: int,
  tree: Any,
  *,
  metadata: dict | None = None,
  max_to_keep: int | None = 2,
) -> None:
  """Saves ``tree`` (and a JSON-serialisable ``metadata`` dict) as checkpoint ``step``.

  Args:
    directory: the checkpoint directory, created if missing.
    step: the step number; it must exceed every step already in ``directory``.
    tree: a pytree of arrays.
    metadata: a JSON-serialisable dict, e.g. the epoch and the wall time; read by `read_metadata`.
    max_to_keep: how many of the latest steps to keep (None keeps all).
  """
  options = ocp.CheckpointManagerOptions(
    max_to_keep=max_to_keep, enable_async_checkpointing=False, cleanup_tmp_directories=True
  )
  args = ocp.args.Composite(
    **{
      _STATE: ocp.args.StandardSave(tree),
      _METADATA: ocp.args.JsonSave(dict(metadata or {})),
    }
  )
  with ocp.CheckpointManager(_absolute(directory), options=options) as manager:
    latest = manager.latest_step()
    if not manager.save(step, args=args):
      raise ValueError(
        f"Cannot save step {step} in {directory}: steps must increase and the latest is {latest}."
      )


def latest_step(directory) -> int | None:
  """The latest complete step in ``directory``, or None if it holds none (or does not exist)."""
  with _reader(directory) as manager:
    return manager.latest_step()


def restore(directory, target_like: Any, step: int | None = None) -> Any:
  """Restores checkpoint ``step`` (default: the latest) into the structure of ``target_like``.

  Args:
    directory: the checkpoint directory.
    target_like: a tree of the saved structure, with array or `jax.ShapeDtypeStruct` leaves.
    step: the step to restore, or None for the latest.

  Returns:
    A tree of the same structure and types as ``target_like``, holding the saved arrays.

  Raises:
    FileNotFoundError: if ``directory`` holds no checkpoint, or none of ``step``.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_like)
  return _restore_item(directory, step, _STATE, ocp.args.StandardRestore(abstract))


def read_metadata(directory, step: int | None = None) -> dict:
  """The metadata dict saved with checkpoint ``step`` (default: the latest)."""
  return _restore_item(directory, step, _METADATA, ocp.args.JsonRestore())


def newest_readable(directory, read: Callable[[int], T]) -> tuple[int, T] | None:
  """``(step, read(step))`` for the newest step of ``directory`` that reads back; None if none.

  A newer step that cannot be read (a truncated, empty or missing file) is reported in one line
  on stderr and, once an older step has read back, renamed to ``<step>.unreadable`` (kept, never
  deleted) so that training can write that step anew. If no step reads back, a ``ValueError``
  naming the directory and the newest step's error is raised, and nothing is renamed.
  """
  directory = _absolute(directory)
  with _reader(directory) as manager:
    steps = sorted(manager.all_steps(), reverse=True)
  unreadable, first_error = [], None
  for step in steps:
    try:
      value = read(step)
    except (MemoryError, jax.errors.JaxRuntimeError):  # the machine's trouble, not the file's
      raise
    except Exception as error:  # any damage: Orbax, TensorStore and JSON raise different types
      reason = (str(error).splitlines() or [""])[0][:200]
      print(
        f"{directory}: step {step} cannot be read ({type(error).__name__}: {reason}); "
        "trying an earlier step.",
        file=sys.stderr,
      )
      unreadable.append(step)
      first_error = first_error or error
      continue
    for bad in unreadable:
      root = epath.Path(directory)
      target, n = root / f"{bad}.unreadable", 1
      while target.exists():
        target, n = root / f"{bad}.unreadable.{n}", n + 1
      (root / str(bad)).rename(target)
    return step, value
  if first_error is not None:
    raise ValueError(
      f"{directory}: no checkpoint step reads back; the newest, step {steps[0]}: {first_error}"
    ) from first_error
  return None
