"""The host loops: `run_schedule` (at each global step, the objective the schedule names runs its
step) and `train_epochs` (epochs of one objective, checkpointed after each and resumable)."""

import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from dualoptim_jax.core import checkpoint
from dualoptim_jax.core.state import TrainState


def run_schedule(
  state: TrainState,
  schedule: Iterable[Hashable],
  step: Callable,
  next_batch: Callable[[Hashable], Any],
  *,
  masks: Mapping[Hashable, Any] | None = None,
  extras: Callable[[Hashable, int], Any] | None = None,
  after_step: Callable[[int, TrainState], None] | None = None,
  progress: Callable[[Iterable], Iterable] | None = None,
) -> TrainState:
  """Runs ``step`` once per entry of ``schedule`` and returns the final state.

  At global step ``t`` with objective ``k = schedule[t]``: ``batch = next_batch(k)``, then
  ``state = step(state, batch, objective=k, mask=masks.get(k), extras=extras(k, t))``, then
  ``after_step(t, state)``.

  Args:
    state: the initial state (donated to the first step).
    schedule: the objective of every global step, e.g. an `AlternatingSchedule`.
    step: a step from `make_step`.
    next_batch: the next batch of an objective's data.
    masks: objective -> gradient mask (missing or None: no mask).
    extras: ``extras(objective, t)``, the traced extra inputs of the loss at step ``t``.
    after_step: called after every step, e.g. to evaluate at the end of an epoch.
    progress: wraps the schedule, e.g. ``tqdm``.
  """
  masks = masks or {}
  for t, objective in enumerate(schedule if progress is None else progress(schedule)):
    batch = next_batch(objective)
    state, _ = step(
      state,
      batch,
      objective=objective,
      mask=masks.get(objective),
      extras=None if extras is None else extras(objective, t),
    )
    if after_step is not None:
      after_step(t, state)
  return state


def train_epochs(
  state: TrainState,
  step: Callable,
  epoch_batches: Callable[[int], Iterable[Any]],
  *,
  epochs: int,
  steps_per_epoch: int,
  hyperparameters: dict,
  checkpoint_dir=None,
  restore: Callable[[Any, TrainState, int], TrainState] = checkpoint.restore,
  until: Callable[[TrainState], bool] | None = None,
  max_epochs: int | None = None,
  on_epoch: Callable[[int, TrainState], None] | None = None,
  progress: bool = True,
  desc: str = "train",
) -> TrainState:
  """Runs ``step`` over ``epoch_batches(e)`` for each epoch ``e``, checkpointing and resuming.

  The run has ``epochs`` epochs; with ``until``, it then goes on epoch by epoch while
  ``until(state)`` is False, up to ``max_epochs`` in all (e.g. until a model has memorised its
  data, at the schedule's final learning rate).

  With ``checkpoint_dir``, the state is saved after every epoch as step ``epoch + 1`` with
  metadata ``{"epoch", "loss", "seconds", "total_seconds", "hyperparameters"}`` (``loss``: the
  epoch's mean step loss; ``seconds``: its wall time; ``total_seconds``: the wall time of all
  epochs so far over every sitting, None if an older checkpoint did not record it), and the run
  first resumes from the newest checkpoint there that reads back (`checkpoint.newest_readable`):
  finished epochs are skipped, so ``epoch_batches`` must depend on the epoch alone for a resumed
  run to equal a straight one. A checkpoint past ``epochs`` or of other ``hyperparameters`` raises
  a ``ValueError`` (past ``max_epochs`` when given). The input state is copied, never donated.

  Args:
    state: the initial state.
    step: a step from `make_step` (``step(state, batch) -> (state, metrics)``).
    epoch_batches: the batches of epoch ``e``.
    epochs: the number of epochs.
    steps_per_epoch: the number of batches of an epoch (for the progress bar).
    hyperparameters: a JSON dict that identifies the run; resuming requires the same.
    checkpoint_dir: where to save and resume from, or None.
    restore: ``restore(directory, state, step)``, e.g. to read an older checkpoint layout.
    until: the condition that ends training after ``epochs``, or None (exactly ``epochs``).
    max_epochs: the most epochs with ``until`` (default ``epochs``).
    on_epoch: ``on_epoch(epoch, state)`` after each epoch (1-indexed), before its checkpoint, e.g.
      an evaluation: a resumed run repeats an epoch whose call did not finish, and skips the
      others.
    progress: show a tqdm progress bar over the steps.
    desc: the progress bar's label.
  """
  if epochs < 1 or (max_epochs is not None and max_epochs < epochs):
    raise ValueError(f"Need 1 <= epochs <= max_epochs, got {epochs} and {max_epochs}.")
  last = epochs if until is None or max_epochs is None else max_epochs
  start, total_seconds, found = 0, 0.0, None
  if checkpoint_dir is not None:  # the newest epoch that reads back, skipping damaged ones
    found = checkpoint.newest_readable(
      checkpoint_dir,
      lambda n: (checkpoint.read_metadata(checkpoint_dir, n), restore(checkpoint_dir, state, n)),
    )
  if found is not None:
    start, (saved, restored) = found
    if start > last:
      raise ValueError(
        f"{checkpoint_dir} holds a checkpoint of epoch {start}, past the {last} epochs asked for."
      )
    if saved.get("hyperparameters", hyperparameters) != hyperparameters:
      raise ValueError(
        f"{checkpoint_dir} holds a run with other hyper-parameters "
        f"({saved['hyperparameters']}, asked for {hyperparameters})."
      )
    total_seconds, state = saved.get("total_seconds"), restored
  else:
    # The step donates its input state; copy it so that the caller's arrays survive.
    state = jax.tree.map(jnp.copy, state)

  def another(epoch):
    if epoch < epochs:
      return True
    if until is None or epoch >= last or until(state):
      return False
    bar.write(f"{desc}: not done after epoch {epoch}; training one more epoch.")
    bar.total += steps_per_epoch
    return True

  with tqdm(
    total=max(epochs, start) * steps_per_epoch,
    initial=start * steps_per_epoch,
    desc=desc,
    unit="step",
    disable=not progress,
  ) as bar:
    epoch = start
    while another(epoch):
      begin, total, count = time.perf_counter(), 0.0, 0
      for batch in epoch_batches(epoch):
        state, metrics = step(state, batch)
        total, count = total + metrics["loss"], count + 1
        bar.update()
      loss = float(total) / max(count, 1)
      bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")
      seconds = time.perf_counter() - begin
      if on_epoch is not None:  # before the checkpoint: a resumed run never skips it
        on_epoch(epoch + 1, state)
      if checkpoint_dir is not None:
        total_seconds = None if total_seconds is None else total_seconds + seconds
        metadata = {
          "epoch": epoch + 1,
          "loss": loss,
          "seconds": seconds,
          "total_seconds": total_seconds,
          "hyperparameters": hyperparameters,
        }
        checkpoint.save(checkpoint_dir, epoch + 1, state, metadata=metadata)
      epoch += 1
  return state
