"""Pure Optax transforms of DualOptim: objective-keyed states, recipes, 8-bit states and objective
schedules. This module's export list is the library's public API."""

from dualoptim_jax.optim import quantize
from dualoptim_jax.optim.accumulate import AccumulateState, accumulate_per_objective
from dualoptim_jax.optim.dual import DualState, SharedState, dual_transform, shared_transform
from dualoptim_jax.optim.plus import DeltaState, DualOptimPlusState, dualoptim_plus
from dualoptim_jax.optim.quantize import QuantizedArray
from dualoptim_jax.optim.quantized_state import STRUCTURAL_ARGS, is_quantized, quantize_moments
from dualoptim_jax.optim.recipes import (
  dualoptim,
  dualoptim_llm,
  sgd_l2,
  shared_adamw,
  shared_adamw_llm,
  shared_sgd,
)
from dualoptim_jax.optim.schedules import (
  FORGET,
  RETAIN,
  AlternatingSchedule,
  alternating,
  epoch_blocks,
)
from dualoptim_jax.optim.shardings import state_shardings

__all__ = [
  "AccumulateState",
  "FORGET",
  "RETAIN",
  "STRUCTURAL_ARGS",
  "AlternatingSchedule",
  "DeltaState",
  "DualOptimPlusState",
  "DualState",
  "QuantizedArray",
  "SharedState",
  "accumulate_per_objective",
  "alternating",
  "dual_transform",
  "dualoptim",
  "dualoptim_llm",
  "dualoptim_plus",
  "epoch_blocks",
  "is_quantized",
  "quantize",
  "quantize_moments",
  "sgd_l2",
  "shared_adamw",
  "shared_adamw_llm",
  "shared_sgd",
  "shared_transform",
  "state_shardings",
]
