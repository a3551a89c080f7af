"""Per-objective gradient accumulation against the inner optimizer run on window means."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dualoptim_jax as dj

PARAMS = {"w": jnp.array([0.5, -1.0, 2.0])}


def grad(i):
  return {"w": jnp.array([1.0, -2.0, 0.5]) * (i + 1)}


@pytest.mark.parametrize(
  "objectives", [["forget"] * 2 + ["retain"] * 4, ["forget", "retain", "retain", "forget"]]
)
def test_each_objective_updates_once_per_window_on_its_own_mean(objectives):
  """Windows of 2: the updates equal the inner optimizer's on each objective's window means,
  whether the objectives come in blocks or interleaved."""
  inner = dj.dualoptim_llm(0.1, forget_lr_ratio=2.0, max_grad_norm=1.0)
  tx = dj.accumulate_per_objective(inner, every_k=2)
  step = jax.jit(tx.update, static_argnames="objective")
  state, params = tx.init(PARAMS), PARAMS
  ref_state, ref_params = inner.init(PARAMS), PARAMS
  pending = {"forget": [], "retain": []}
  for i, objective in enumerate(objectives):
    updates, state = step(grad(i), state, params, objective=objective)
    params = optax.apply_updates(params, updates)
    pending[objective].append(grad(i)["w"])
    if len(pending[objective]) == 2:
      mean = {"w": sum(pending[objective]) / 2}
      pending[objective] = []
      ref_updates, ref_state = inner.update(mean, ref_state, ref_params, objective=objective)
      ref_params = optax.apply_updates(ref_params, ref_updates)
    else:
      assert float(jnp.abs(updates["w"]).max()) == 0.0  # mid-window: no update
    np.testing.assert_allclose(params["w"], ref_params["w"], rtol=1e-6)
  assert step._cache_size() == 2  # one compilation per objective
  assert int(optax.tree.get(state.inner_state, "DualState").count) == len(objectives) // 2


def test_optax_multisteps_would_mix_the_objectives():
  """Why the accumulator exists: MultiSteps sums a forget and a retain gradient into one update
  of the last objective, so its result differs from per-objective accumulation."""
  inner = dj.dualoptim(1e-2, 1e-1)
  ours = dj.accumulate_per_objective(inner, every_k=2)
  theirs = optax.MultiSteps(inner, every_k_schedule=2)
  results = []
  for tx in (ours, theirs):
    state, params = tx.init(PARAMS), PARAMS
    for i, objective in enumerate(["forget", "retain", "forget", "retain"]):
      updates, state = tx.update(grad(i), state, params, objective=objective)
      params = optax.apply_updates(params, updates)
    results.append(np.asarray(params["w"]))
  assert not np.allclose(*results)


def test_bad_arguments_are_refused():
  with pytest.raises(ValueError, match="every_k must be a positive int"):
    dj.accumulate_per_objective(dj.dualoptim(1e-3, 1e-2), every_k=0)
  tx = dj.accumulate_per_objective(dj.dualoptim(1e-3, 1e-2), every_k=2)
  with pytest.raises(ValueError, match="Unknown objective 'forgett'"):
    tx.update(grad(0), tx.init(PARAMS), PARAMS, objective="forgett")
