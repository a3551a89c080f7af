"""Objective schedules: which objective a host-side loop runs at global step t."""

import dataclasses
from collections.abc import Iterator

FORGET = "forget"
RETAIN = "retain"


@dataclasses.dataclass(frozen=True)
class AlternatingSchedule:
  r"""``forget_steps`` forget steps, then ``retain_steps`` retain steps, repeated.

  With :math:`f` = ``forget_steps``, :math:`r` = ``retain_steps`` and the 0-indexed global step
  :math:`t`, the objective is ``"forget"`` iff :math:`t \bmod (f + r) < f`. This is the reference's
  rule ``(T - 1) mod (f + r) < f`` on the 1-indexed optimizer step :math:`T = t + 1`.

  Attributes:
    forget_steps: forget steps per cycle (>= 0).
    retain_steps: retain steps per cycle (>= 0).
    total_steps: length of the schedule, or None for an endless one.
  """

  forget_steps: int
  retain_steps: int
  total_steps: int | None = None

  def __post_init__(self):
    if self.forget_steps < 0 or self.retain_steps < 0 or self.forget_steps + self.retain_steps == 0:
      raise ValueError(
        "forget_steps and retain_steps must be >= 0 and not both 0, got "
        f"{self.forget_steps} and {self.retain_steps}."
      )
    if self.total_steps is not None and self.total_steps < 0:
      raise ValueError(f"total_steps must be >= 0, got {self.total_steps}.")

  @property
  def period(self) -> int:
    return self.forget_steps + self.retain_steps

  def is_forget(self, step):
    """True where `step` is a forget step; works on ints and on (traced) integer arrays."""
    return step % self.period < self.forget_steps

  def __call__(self, step: int) -> str:
    """The objective label of 0-indexed global step `step`."""
    if step < 0 or (self.total_steps is not None and step >= self.total_steps):
      raise IndexError(f"step {step} is outside the schedule of {self.total_steps} steps.")
    return FORGET if self.is_forget(step) else RETAIN

  def steps_before(self, step: int, objective: str) -> int:
    """How many steps of `objective` run before global step `step` (its own step count there)."""
    cycles, rest = divmod(step, self.period)
    forget = cycles * self.forget_steps + min(rest, self.forget_steps)
    if objective == FORGET:
      return forget
    if objective == RETAIN:
      return step - forget
    raise ValueError(f"Unknown objective {objective!r}; known objectives: {FORGET!r}, {RETAIN!r}.")

  def __len__(self) -> int:
    if self.total_steps is None:
      raise TypeError("An endless schedule has no length.")
    return self.total_steps

  def __iter__(self) -> Iterator[str]:
    step = 0
    while self.total_steps is None or step < self.total_steps:
      yield self(step)
      step += 1


def epoch_blocks(
  forget_steps_per_epoch: int, retain_steps_per_epoch: int, epochs: int
) -> AlternatingSchedule:
  """The classification loops: each epoch runs all forget batches, then all retain batches.

  RL, SalUn and SCRUB use (number of forget batches, number of retain batches); FT uses
  ``(0, retain batches)`` and GA ``(forget batches, 0)``.
  """
  return AlternatingSchedule(
    forget_steps_per_epoch,
    retain_steps_per_epoch,
    epochs * (forget_steps_per_epoch + retain_steps_per_epoch),
  )


def alternating(
  forget_steps: int = 1, retain_steps: int = 5, total_steps: int | None = None
) -> AlternatingSchedule:
  """The LLM and SFRon loops: cycles of `forget_steps` forget then `retain_steps` retain steps.

  SFRon's "one forget step every 5 iterations, a retain step every iteration" is
  ``alternating(1, 5)``: F R R R R R F R ... .
  """
  return AlternatingSchedule(forget_steps, retain_steps, total_steps)
