"""Helpers shared by several test modules (on the path through pytest's ``pythonpath``)."""

import jax
import numpy as np
import optax


def run_updates(tx, params, grads_and_objectives):
  """Applies ``tx`` to ``[(grads, objective), ...]`` from ``params``.

  Returns the parameters after every step and the final optimizer state.
  """
  state = tx.init(params)
  trajectory = []
  for grads, objective in grads_and_objectives:
    updates, state = tx.update(grads, state, params, objective=objective)
    params = optax.apply_updates(params, updates)
    trajectory.append(params)
  return trajectory, state


def assert_trees_equal(a, b):
  """Same structure, dtypes and bits."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    assert np.array_equal(x, y)
