"""The host loop of a run: at each global step, the objective the schedule names runs its step."""

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

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
