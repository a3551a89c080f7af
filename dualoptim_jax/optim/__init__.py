"""Pure Optax transforms of DualOptim: objective-keyed states, recipes and objective schedules."""

from dualoptim_jax.optim.dual import DualState, SharedState, dual_transform, shared_transform
from dualoptim_jax.optim.plus import DeltaState, DualOptimPlusState, dualoptim_plus
from dualoptim_jax.optim.quantized_state import quantize_moments
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

__all__ = [
    "FORGET",
    "RETAIN",
    "AlternatingSchedule",
    "DeltaState",
    "DualOptimPlusState",
    "DualState",
    "SharedState",
    "alternating",
    "dual_transform",
    "dualoptim",
    "dualoptim_llm",
    "dualoptim_plus",
    "epoch_blocks",
    "quantize_moments",
    "sgd_l2",
    "shared_adamw",
    "shared_adamw_llm",
    "shared_sgd",
    "shared_transform",
]
