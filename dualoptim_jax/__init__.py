"""dualoptim_jax: DualOptim and DualOptim+ machine-unlearning optimizers for JAX and Optax."""

from dualoptim_jax import quantize
from dualoptim_jax.optim import (
    FORGET,
    RETAIN,
    AlternatingSchedule,
    DeltaState,
    DualOptimPlusState,
    DualState,
    SharedState,
    alternating,
    dual_transform,
    dualoptim,
    dualoptim_llm,
    dualoptim_plus,
    epoch_blocks,
    quantize_moments,
    sgd_l2,
    shared_adamw,
    shared_adamw_llm,
    shared_sgd,
    shared_transform,
)

from dualoptim_jax.quantize import QuantizedArray

__version__ = "0.1.0"

__all__ = [
    "FORGET",
    "RETAIN",
    "AlternatingSchedule",
    "DeltaState",
    "DualOptimPlusState",
    "DualState",
    "QuantizedArray",
    "SharedState",
    "alternating",
    "dual_transform",
    "dualoptim",
    "dualoptim_llm",
    "dualoptim_plus",
    "epoch_blocks",
    "quantize",
    "quantize_moments",
    "sgd_l2",
    "shared_adamw",
    "shared_adamw_llm",
    "shared_sgd",
    "shared_transform",
]
