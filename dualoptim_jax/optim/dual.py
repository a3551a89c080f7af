"""Objective-keyed optimizers: one Optax state per objective, or one shared state.

`dual_transform` is DualOptim's core (Zhong, Luo and Liu, 2025): the forget and retain steps run
two optimizers with separate states over the same parameters. `shared_transform` is the baseline
the paper compares against: one optimizer state, the learning rate switched per objective.
"""

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class DualState(NamedTuple):
  """State of `dual_transform`.

  Attributes:
    count: int32 number of updates of any objective so far (the global step).
    inner_states: the state of each objective's transform, keyed by objective label.
  """

  count: jax.Array
  inner_states: dict[Hashable, optax.OptState]


class SharedState(NamedTuple):
  """State of `shared_transform`.

  Attributes:
    count: int32 number of updates of any objective so far (the global step).
    inner_state: the one state that every objective updates.
  """

  count: jax.Array
  inner_state: optax.OptState


def _check_objective(objective: Any, labels) -> None:
  if objective is None:
    raise ValueError(
      f"update() needs the keyword argument `objective`, one of {sorted(map(repr, labels))}."
    )
  try:
    known = objective in labels
  except TypeError:  # unhashable, e.g. a traced array
    known = False
  if not known:
    raise ValueError(
      f"Unknown objective {objective!r}; known objectives: {sorted(map(repr, labels))}. "
      "The objective must be a static Python value (mark it static under jax.jit)."
    )


def check_same_structure(updates: optax.Updates, params: optax.Params | None) -> None:
  """Raises a ValueError if `updates` and `params` differ in tree structure or leaf shapes."""
  if params is None:
    return
  u_def, p_def = jax.tree.structure(updates), jax.tree.structure(params)
  if u_def != p_def:
    raise ValueError(
      f"The updates and params trees differ in structure:\n  updates: {u_def}\n  params:  {p_def}"
    )
  for (path, u), p in zip(
    jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(params), strict=True
  ):
    if jnp.shape(u) != jnp.shape(p):
      raise ValueError(
        f"Leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(u)} in the updates "
        f"but {jnp.shape(p)} in the params."
      )


def _run_inner(tx, updates, state, params, what: str, extra_args):
  try:
    return tx.update(updates, state, params, **extra_args)
  except (ValueError, TypeError) as error:
    if not any(word in str(error) for word in ("tree", "structure", "mismatch")):
      raise
    raise ValueError(
      f"The updates do not match the optimizer state of {what} (was the state initialised "
      f"with parameters of another structure?): {error}"
    ) from error


def dual_transform(
  transforms: Mapping[Hashable, optax.GradientTransformation],
) -> optax.GradientTransformationExtraArgs:
  r"""Keeps one Optax transform and its own state per objective label.

  At every update exactly one objective :math:`k` runs:

  .. math::
    u_t, s^{(k)}_{t} = \mathrm{tx}_k(g_t, s^{(k)}_{t-1}, \theta_t), \qquad
    s^{(j)}_{t} = s^{(j)}_{t-1} \ \ (j \ne k), \qquad T_t = T_{t-1} + 1,

  so each objective's moments, step counters and schedules see only its own gradients, while the
  global count :math:`T` counts every update. DualOptim's classification recipe is
  ``dual_transform({"forget": adamw, "retain": sgd_with_momentum})``.

  Args:
    transforms: objective label -> Optax transform. Labels are any hashable, sortable values
      (``"forget"`` and ``"retain"`` in this project).

  Returns:
    A transform whose ``update(updates, state, params=None, *, objective, **extra_args)`` runs
    ``transforms[objective]``; ``objective`` is a static Python value, and other extra arguments are
    forwarded to the inner transform. Only that objective's state changes: the other inner states
    are returned as the very same arrays.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import dualoptim_jax as dj
    >>> tx = dj.dual_transform({"forget": optax.adamw(1e-3), "retain": optax.sgd(1e-2, 0.9)})
    >>> params = {"w": jnp.ones(3)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params, objective="forget")

  References:
    Zhong, Luo and Liu, *DualOptim: Enhancing Efficacy and Stability in Machine Unlearning with
    Dual Optimizers*, 2025.
  """
  if not transforms:
    raise ValueError("dual_transform needs at least one objective transform.")
  transforms = {k: optax.with_extra_args_support(tx) for k, tx in transforms.items()}

  def init_fn(params):
    return DualState(
      count=jnp.zeros([], jnp.int32),
      inner_states={k: tx.init(params) for k, tx in transforms.items()},
    )

  def update_fn(updates, state, params=None, *, objective=None, **extra_args):
    _check_objective(objective, transforms)
    check_same_structure(updates, params)
    updates, inner = _run_inner(
      transforms[objective],
      updates,
      state.inner_states[objective],
      params,
      f"objective {objective!r}",
      extra_args,
    )
    inner_states = dict(state.inner_states)
    inner_states[objective] = inner
    return updates, DualState(optax.safe_increment(state.count), inner_states)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def as_schedule(learning_rate: float | optax.Schedule) -> optax.Schedule:
  """A schedule as is; a constant as a constant schedule."""
  if callable(learning_rate):
    return learning_rate
  return lambda count: learning_rate


def shared_transform(
  factory: Callable[..., optax.GradientTransformation],
  learning_rates: Mapping[Hashable, float | optax.Schedule],
  **hyperparams,
) -> optax.GradientTransformationExtraArgs:
  r"""The shared-optimizer baseline: one state for all objectives, a learning rate per objective.

  Builds ``factory(learning_rate=lr_k, **hyperparams)`` for each objective :math:`k` and runs them
  on ONE state, so moments and step counters are shared across objectives while each update uses
  its objective's learning rate, as PyTorch code does when it switches ``param_group["lr"]``
  between the forget and the retain phase. With ``optax.adamw`` the decoupled decay of a step is
  :math:`\eta_k \lambda \theta`, with that step's :math:`\eta_k`.

  A schedule in ``learning_rates`` is evaluated on the number of updates of the shared state so far
  (forget and retain updates both count); constants are turned into constant schedules so that all
  objectives have the same state structure.

  Args:
    factory: an Optax alias such as ``optax.adamw`` or ``optax.sgd``, or any function with a
      ``learning_rate`` argument returning a transform.
    learning_rates: objective label -> learning rate (float or schedule).
    **hyperparams: further keyword arguments of ``factory``, shared by all objectives.

  Returns:
    A transform with ``update(updates, state, params=None, *, objective, **extra_args)``.
  """
  if not learning_rates:
    raise ValueError("shared_transform needs a learning rate for at least one objective.")
  transforms = {
    k: optax.with_extra_args_support(factory(learning_rate=as_schedule(lr), **hyperparams))
    for k, lr in learning_rates.items()
  }
  first = next(iter(transforms.values()))

  def init_fn(params):
    shapes = {k: jax.eval_shape(tx.init, params) for k, tx in transforms.items()}
    first_shape = next(iter(shapes.values()))
    for k, shape in shapes.items():
      if jax.tree.structure(shape) != jax.tree.structure(first_shape):
        raise ValueError(
          f"factory(learning_rate=...) gives objective {k!r} a state of another structure; "
          "the shared baseline needs one state that all objectives can update."
        )
    return SharedState(count=jnp.zeros([], jnp.int32), inner_state=first.init(params))

  def update_fn(updates, state, params=None, *, objective=None, **extra_args):
    _check_objective(objective, transforms)
    check_same_structure(updates, params)
    updates, inner = _run_inner(
      transforms[objective], updates, state.inner_state, params, "the shared state", extra_args
    )
    return updates, SharedState(optax.safe_increment(state.count), inner)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
