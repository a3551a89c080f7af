"""Task-agnostic training: the train state, the step over a general loss, the host loop over an
objective schedule, Orbax checkpoints, and device meshes and several hosts for all of them."""

from dualoptim_jax.core import checkpoint, distributed
from dualoptim_jax.core.loop import run_schedule, train_epochs
from dualoptim_jax.core.sharding import MeshPlan, parse_mesh
from dualoptim_jax.core.state import TrainState, init_state
from dualoptim_jax.core.step import LossFn, make_step

__all__ = [
  "LossFn",
  "MeshPlan",
  "TrainState",
  "checkpoint",
  "distributed",
  "init_state",
  "make_step",
  "parse_mesh",
  "run_schedule",
  "train_epochs",
]
