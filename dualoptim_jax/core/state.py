"""The functional train state of any task: parameters, model state, optimizer state and a key."""

from typing import Any, NamedTuple

import jax
import optax
from flax import nnx


class TrainState(NamedTuple):
  """Everything a train step changes.

  Attributes:
    params: the trainable parameters (``nnx.Param`` variables of an NNX model).
    model_state: the model's other variables (e.g. BatchNorm statistics), or an empty state.
    opt_state: the optimizer state.
    rng: a raw ``uint32[2]`` key, split once per step for the loss (dropout, noise, sampling).
  """

  params: Any
  model_state: Any
  opt_state: optax.OptState
  rng: jax.Array


def init_state(
  model: nnx.Module, tx: optax.GradientTransformation, seed: int = 0
) -> tuple[nnx.GraphDef, TrainState]:
  """Splits ``model`` into its graph definition and a fresh `TrainState` for ``tx``.

  The state holds the model's own arrays: copy them (``jax.tree.map(jnp.copy, state)``) before
  handing the state to a step that donates it if the model is still needed.
  """
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  return graphdef, TrainState(params, model_state, tx.init(params), jax.random.PRNGKey(seed))
