"""dualoptim_jax: DualOptim and DualOptim+ machine-unlearning optimizers for JAX and Optax.

The public API is the optimizers' (``dualoptim_jax.optim``), re-exported here. The training core
(``core``), the tasks (``tasks.classification``), data, models and evaluation are subpackages.
"""

from dualoptim_jax import optim
from dualoptim_jax.optim import *  # noqa: F403  (the export list is optim.__all__)

__version__ = "0.1.0"

__all__ = optim.__all__
