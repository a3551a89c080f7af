"""dualoptim_jax: DualOptim and DualOptim+ machine-unlearning optimizers for JAX and Optax."""

from dualoptim_jax.optim import *  # noqa: F403
from dualoptim_jax.optim import __all__ as _optim_all

__version__ = "0.1.0"
__all__ = list(_optim_all)
