"""The functional train state and jitted, donated train steps over a split Flax NNX model."""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax
from flax import nnx

from dualoptim_jax.models import apply


class TrainState(NamedTuple):
  """Everything a train step changes: parameters, BatchNorm statistics and optimizer state."""

  params: nnx.State
  batch_stats: nnx.State
  opt_state: optax.OptState


def init_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
  """Splits ``model`` into its graph definition and a fresh `TrainState` for ``tx``."""
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return graphdef, TrainState(params, batch_stats, tx.init(params))


# loss_fn(logits, labels, teacher_logits, **hparams) -> scalar
LossFn = Callable[..., jax.Array]


def make_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    objective: Any = None,
) -> Callable:
  """A jitted train step ``step(state, images, labels, mask, teacher, **hparams) -> (state, loss)``.

  The model runs in train mode (batch statistics; running statistics updated), as the reference
  does in both the forget and the retain phase. ``mask`` (a 0/1 tree like the params, or None)
  multiplies the gradients before the optimizer, so masked weights still receive the optimizer's
  weight decay, as in the reference. ``teacher`` is ``(params, batch_stats)`` of a frozen model
  whose train-mode logits are passed to ``loss_fn`` (SCRUB), or None. ``hparams`` are traced
  scalars (e.g. SFRon's alpha_t), so changing them does not recompile. The state is donated.

  Args:
    graphdef: the model's graph definition (static).
    tx: the optimizer; ``objective`` is passed to its update when not None.
    loss_fn: ``loss_fn(logits, labels, teacher_logits, **hparams)``.
    objective: the objective label of this step.
  """
  extra = {} if objective is None else {"objective": objective}

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state: TrainState, images, labels, mask=None, teacher=None, **hparams):
    teacher_logits = None
    if teacher is not None:
      teacher_logits, _ = apply(graphdef, *teacher, images, train=True)
      teacher_logits = jax.lax.stop_gradient(teacher_logits)

    def objective_fn(params):
      logits, batch_stats = apply(graphdef, params, state.batch_stats, images, train=True)
      return loss_fn(logits, labels, teacher_logits, **hparams), batch_stats

    (loss, batch_stats), grads = jax.value_and_grad(objective_fn, has_aux=True)(state.params)
    if mask is not None:
      grads = jax.tree.map(lambda g, m: g * m.astype(g.dtype), grads, mask)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
    return TrainState(optax.apply_updates(state.params, updates), batch_stats, opt_state), loss

  return step


@functools.partial(jax.jit, static_argnums=0)
def predict(graphdef: nnx.GraphDef, params, batch_stats, images) -> jax.Array:
  """Eval-mode logits (running BatchNorm statistics)."""
  return apply(graphdef, params, batch_stats, images, train=False)[0]


def make_grad_fn(graphdef: nnx.GraphDef, loss_fn: LossFn) -> Callable:
  """Jitted ``grad(params, batch_stats, images, labels)`` of an eval-mode loss (for saliency masks)."""

  @jax.jit
  def grad(params, batch_stats, images, labels):
    def f(params):
      logits, _ = apply(graphdef, params, batch_stats, images, train=False)
      return loss_fn(logits, labels, None)

    return jax.grad(f)(params)

  return grad

