"""Helpers shared by several test modules (on the path through pytest's ``pythonpath``)."""

import os
import re
import subprocess
import sys

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


def run_on_8_devices(checks: str, passed: int, timeout: int = 1500) -> None:
  """Runs the pytest file ``checks`` in a process of its own on 8 forced CPU devices (the device
  count is fixed when JAX starts) and requires exactly ``passed`` passing tests."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  result = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", checks],
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
  assert re.search(rf"\b{passed} passed in\b", result.stdout), result.stdout[-2000:]
