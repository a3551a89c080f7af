"""Task-agnostic training: the train state, the step over a general loss, the host loop over an
objective schedule, and Orbax checkpoints."""

from dualoptim_jax.core import checkpoint
from dualoptim_jax.core.loop import run_schedule, train_epochs
from dualoptim_jax.core.state import TrainState, init_state
from dualoptim_jax.core.step import LossFn, make_step

__all__ = [
  "LossFn",
  "TrainState",
  "checkpoint",
  "init_state",
  "make_step",
  "run_schedule",
  "train_epochs",
]
