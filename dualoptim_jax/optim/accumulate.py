"""Gradient accumulation that keeps each objective's gradients apart."""

from collections.abc import Hashable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from dualoptim_jax.optim.dual import _check_objective
from dualoptim_jax.optim.schedules import FORGET, RETAIN


class AccumulateState(NamedTuple):
  """State of `accumulate_per_objective`.

  Attributes:
    mini_steps: per objective, its micro-steps in the current window (int32).
    grads: per objective, the sum of its window's gradients so far.
    inner_state: the state of the wrapped transform.
  """

  mini_steps: dict[Hashable, jax.Array]
  grads: dict[Hashable, optax.Updates]
  inner_state: optax.OptState


def accumulate_per_objective(
  inner: optax.GradientTransformation,
  every_k: int,
  objectives: Sequence[Hashable] = (FORGET, RETAIN),
) -> optax.GradientTransformationExtraArgs:
  r"""Averages each objective's gradients over ``every_k`` of its own micro-steps, then updates.

  For objective :math:`k` with window sum :math:`G_k` and count :math:`n_k`, a micro-step with
  gradient :math:`g` sets :math:`G_k \leftarrow G_k + g`, :math:`n_k \leftarrow n_k + 1`; when
  :math:`n_k = ` ``every_k`` the inner transform runs once on :math:`G_k / n_k` with
  ``objective=k`` and the window restarts; otherwise the update is zero and the inner state is
  untouched. A window never mixes objectives, unlike ``optax.MultiSteps`` around a dual optimizer,
  which would sum forget and retain gradients and apply them with the last micro-step's objective.
  The windows of the objectives are independent, so an alternating schedule of optimizer steps
  (every micro-step of a step with the same objective) accumulates as with one objective. The
  state holds one float32 gradient sum per objective.

  Args:
    inner: the optimizer, e.g. ``dualoptim_llm(...)``; it receives ``objective``.
    every_k: micro-steps per update of each objective.
    objectives: the objective labels.
  """
  if not (isinstance(every_k, int) and every_k >= 1):
    raise ValueError(f"every_k must be a positive int, got {every_k!r}.")
  inner = optax.with_extra_args_support(inner)
  labels = tuple(objectives)

  def init_fn(params):
    return AccumulateState(
      mini_steps={k: jnp.zeros([], jnp.int32) for k in labels},
      grads={k: optax.tree.zeros_like(params, jnp.float32) for k in labels},
      inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, *, objective=None, **extra_args):
    _check_objective(objective, labels)
    total = jax.tree.map(lambda s, g: s + g.astype(s.dtype), state.grads[objective], updates)
    mini_steps = state.mini_steps[objective] + 1
    like = updates if params is None else params  # the dtypes of the updates
    # Built outside lax.cond, so that they keep their arrays' shardings on a mesh.
    no_update, empty = optax.tree.zeros_like(like), optax.tree.zeros_like(total)

    def apply(_):
      mean = jax.tree.map(lambda s, g: (s / every_k).astype(g.dtype), total, updates)
      new_updates, inner_state = inner.update(
        mean, state.inner_state, params, objective=objective, **extra_args
      )
      new_updates = jax.tree.map(lambda u, x: u.astype(x.dtype), new_updates, like)
      return new_updates, inner_state, empty, jnp.zeros([], jnp.int32)

    def wait(_):
      return no_update, state.inner_state, total, mini_steps

    new_updates, inner_state, total, mini_steps = jax.lax.cond(
      mini_steps >= every_k, apply, wait, None
    )
    return new_updates, AccumulateState(
      mini_steps={**state.mini_steps, objective: mini_steps},
      grads={**state.grads, objective: total},
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
