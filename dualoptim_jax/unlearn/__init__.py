"""Unlearning methods over Flax NNX models: losses, gradient masks, jitted steps and the host loop."""

from dualoptim_jax.unlearn.masks import fisher_mask, salun_mask
from dualoptim_jax.unlearn.methods import METHODS, OPTIMIZERS, Method, UnlearnConfig, unlearn
from dualoptim_jax.unlearn.steps import TrainState, init_state, make_step, predict

__all__ = [
    "METHODS",
    "OPTIMIZERS",
    "Method",
    "TrainState",
    "UnlearnConfig",
    "fisher_mask",
    "init_state",
    "make_step",
    "predict",
    "salun_mask",
    "unlearn",
]
