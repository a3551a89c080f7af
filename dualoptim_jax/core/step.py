"""A jitted, donated train step over a general loss function, one compilation per objective."""

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax
import optax

from dualoptim_jax.core.sharding import MeshPlan
from dualoptim_jax.core.state import TrainState

# loss_fn(params, model_state, batch, rng, extras) -> (loss, (model_state, metrics))
LossFn = Callable[..., tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]]


def make_step(
  tx: optax.GradientTransformation,
  loss_fns: LossFn | Mapping[Hashable, LossFn],
  plan: MeshPlan | None = None,
  *,
  stacked: bool = False,
) -> Callable:
  r"""A jitted step ``step(state, batch, *, objective=None, mask=None, extras=None)``.

  One step of objective :math:`k` with loss :math:`L_k`, mask :math:`m` and key :math:`r`:

  .. math::
    g = m \odot \nabla_\theta L_k(\theta, s, \text{batch}, r, \text{extras}), \qquad
    u, o' = \mathrm{tx.update}(g, o, \theta; k), \qquad \theta' = \theta + u

  where the model state :math:`s` (e.g. BatchNorm statistics) becomes the one the loss returns and
  the key is split once per step. ``mask`` (a 0/1 tree like the params, or None) multiplies the
  gradients before the optimizer, so masked weights still get the optimizer's weight decay.
  ``extras`` is a pytree of traced inputs of the loss (a frozen teacher's variables, a
  hyper-parameter that changes over the run): new values do not recompile. ``objective`` is static,
  so each objective compiles once. The state is donated. With a ``plan`` the same step runs on its
  device mesh (`MeshPlan.jit_step`).

  With ``stacked``, the step runs ``jax.vmap``-ed over a leading axis of the state, the batch and
  the mask (the extras are shared): several runs of one schedule, e.g. seeds, or learning rates
  that ``optax.inject_hyperparams`` keeps in the optimizer state, in one compiled program.

  Args:
    tx: the optimizer; ``objective`` is passed to its update unless it is None.
    loss_fns: ``loss_fn(params, model_state, batch, rng, extras) -> (loss, (model_state,
      metrics))``, or a mapping objective -> such a function.

  Returns:
    ``step(state, batch, *, objective=None, mask=None, extras=None) -> (state, metrics)``, the
    metrics being the loss's plus ``"loss"``.
  """

  def step(state: TrainState, batch, *, objective=None, mask=None, extras=None):
    loss_fn = loss_fns if callable(loss_fns) else loss_fns[objective]
    rng, loss_rng = jax.random.split(state.rng)

    def objective_fn(params):
      return loss_fn(params, state.model_state, batch, loss_rng, extras)

    (loss, (model_state, metrics)), grads = jax.value_and_grad(objective_fn, has_aux=True)(
      state.params
    )
    if mask is not None:
      grads = jax.tree.map(lambda g, m: g * m.astype(g.dtype), grads, mask)
    extra_args = {} if objective is None else {"objective": objective}
    updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra_args)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, model_state, opt_state, rng), {**metrics, "loss": loss}

  if stacked:
    if plan is not None:
      raise ValueError("make_step: a stacked step runs on one device; pass plan=None.")
    single = step

    def step(state, batch, *, objective=None, mask=None, extras=None):
      def one(state, batch, mask):
        return single(state, batch, objective=objective, mask=mask, extras=extras)

      return jax.vmap(one)(state, batch, mask)

  if plan is not None:
    return plan.jit_step(step, tx)
  return jax.jit(step, static_argnames="objective", donate_argnums=0)
