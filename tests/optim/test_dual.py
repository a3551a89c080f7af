"""Invariants of dual_transform / shared_transform and their composition with optax, flax, orbax."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import dualoptim_jax as dj


def make_params():
  return {"conv": jnp.arange(12.0).reshape(3, 4) / 10, "bias": jnp.array([0.5, -1.0])}


def grads_like(params, seed):
  keys = jax.random.split(jax.random.key(seed), 2)
  return {
    k: jax.random.normal(key, v.shape)
    for (k, v), key in zip(sorted(params.items()), keys, strict=True)
  }


def trees_bitwise_equal(a, b):
  return all(
    np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


def test_state_is_namedtuple_with_int32_count_and_dict():
  state = dj.dualoptim(1e-3, 1e-2).init(make_params())
  assert isinstance(state, dj.DualState)
  assert state.count.dtype == jnp.int32 and state.count.shape == ()
  assert set(state.inner_states) == {"forget", "retain"}


def test_untouched_objective_state_is_the_same_arrays_eager():
  tx = dj.dualoptim(1e-3, 1e-2)
  params = make_params()
  state = tx.init(params)
  _, new_state = tx.update(grads_like(params, 0), state, params, objective="retain")
  before, after = (
    jax.tree.leaves(state.inner_states["forget"]),
    jax.tree.leaves(new_state.inner_states["forget"]),
  )
  assert all(a is b for a, b in zip(before, after, strict=True))
  assert not trees_bitwise_equal(state.inner_states["retain"], new_state.inner_states["retain"])


@pytest.mark.parametrize("run_first, untouched", [("forget", "retain"), ("retain", "forget")])
def test_untouched_objective_state_is_bit_identical_under_jit(run_first, untouched):
  tx = dj.dualoptim(1e-3, 1e-2)
  params = make_params()
  state = tx.init(params)
  # Give the untouched objective a non-trivial state first.
  _, state = tx.update(grads_like(params, 1), state, params, objective=untouched)
  step = jax.jit(functools.partial(tx.update, objective=run_first))
  _, new_state = step(grads_like(params, 2), state, params)
  assert trees_bitwise_equal(state.inner_states[untouched], new_state.inner_states[untouched])
  assert int(new_state.count) == 2


@pytest.mark.parametrize(
  "make_tx",
  [
    lambda: dj.dualoptim(1e-3, 1e-2),
    lambda: dj.shared_sgd(0.05, 0.01),
    lambda: dj.shared_adamw(1e-3, 1e-4),
    lambda: dj.dualoptim_llm(optax.linear_schedule(0.0, 1e-2, 3), 1.5, max_grad_norm=1.0),
  ],
)
def test_jit_equals_no_jit_and_no_recompilation(make_tx):
  tx = make_tx()
  params = make_params()

  @functools.partial(jax.jit, static_argnames="objective")
  @chex.assert_max_traces(n=2)  # one trace per objective, however many calls
  def jitted(grads, state, params, objective):
    return tx.update(grads, state, params, objective=objective)

  state_eager = state_jit = tx.init(params)
  for i, objective in enumerate(["forget", "retain", "forget", "retain", "retain"]):
    grads = grads_like(params, i)
    u_eager, state_eager = tx.update(grads, state_eager, params, objective=objective)
    u_jit, state_jit = jitted(grads, state_jit, params, objective=objective)
    chex.assert_trees_all_close(u_eager, u_jit, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(state_eager, state_jit, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_equal_dtypes(u_jit, params)
    chex.assert_trees_all_equal_structs(state_jit, tx.init(params))
  chex.clear_trace_counter()


def test_inner_extra_args_are_forwarded_and_unknown_ones_tolerated():
  seen = {}

  def init(params):
    return optax.EmptyState()

  def update(updates, state, params=None, *, scale):
    seen["scale"] = scale
    return jax.tree.map(lambda u: scale * u, updates), state

  tx = dj.dual_transform(
    {"forget": optax.GradientTransformationExtraArgs(init, update), "retain": optax.sgd(1.0)}
  )
  params = make_params()
  state = tx.init(params)
  updates, _ = tx.update(params, state, params, objective="forget", scale=3.0)
  assert seen["scale"] == 3.0
  chex.assert_trees_all_close(updates, jax.tree.map(lambda p: 3 * p, params))
  # The retain transform takes no extra args: they are dropped, as optax.chain does.
  tx.update(params, state, params, objective="retain", scale=3.0)


def test_works_inside_chain():
  tx = optax.chain(optax.clip_by_global_norm(1.0), dj.dualoptim(1e-2, 1e-1))
  params = make_params()
  state = tx.init(params)
  grads = jax.tree.map(lambda p: 100.0 * jnp.ones_like(p), params)
  updates, state = tx.update(grads, state, params, objective="retain")
  # Clipped to unit norm first, then SGD: update = -lr * (g_clipped + 5e-4 theta).
  norm = np.sqrt(sum(np.sum(np.asarray(g) ** 2) for g in jax.tree.leaves(grads)))
  expected = jax.tree.map(lambda g, p: -0.1 * (g / norm + 5e-4 * p), grads, params)
  chex.assert_trees_all_close(updates, expected, rtol=1e-5)
  assert int(optax.tree.get(state, "DualState").count) == 1


def test_works_under_inject_hyperparams():
  tx = optax.inject_hyperparams(dj.dualoptim)(forget_lr=1e-3, retain_lr=1e-2)
  params = make_params()
  state = tx.init(params)
  grads = grads_like(params, 0)
  state.hyperparams["retain_lr"] = jnp.asarray(0.5)
  updates, state = tx.update(grads, state, params, objective="retain")
  expected = jax.tree.map(lambda g, p: -0.5 * (g + 5e-4 * p), grads, params)
  chex.assert_trees_all_close(updates, expected, rtol=1e-5)
  assert int(state.inner_state.count) == 1


def test_works_under_apply_if_finite():
  tx = optax.apply_if_finite(dj.dualoptim(1e-3, 1e-2), max_consecutive_errors=3)
  params = make_params()
  state = tx.init(params)
  _, state = tx.update(grads_like(params, 0), state, params, objective="forget")
  bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), grads_like(params, 1))
  updates, bad_state = tx.update(bad, state, params, objective="forget")
  assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
  assert trees_bitwise_equal(bad_state.inner_state, state.inner_state)
  assert int(bad_state.notfinite_count) == 1
  updates, good_state = tx.update(grads_like(params, 2), bad_state, params, objective="retain")
  assert int(good_state.inner_state.count) == 2
  assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))


def test_works_with_flax_nnx_optimizer():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, dj.dualoptim(1e-2, 1e-1), wrt=nnx.Param)
  x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))

  def loss_fn(model):
    return jnp.mean((model(x) - y) ** 2)

  @nnx.jit(static_argnames="objective")
  def train_step(model, optimizer, objective):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads, objective=objective)
    return loss

  losses = [
    float(train_step(model, optimizer, objective=o))
    for o in ["retain"] * 5 + ["forget"] + ["retain"] * 5
  ]
  assert losses[-1] < losses[0]
  state = optimizer.opt_state
  assert int(state.count[...]) == 11
  assert int(optax.tree.get(state.inner_states["forget"], "count")[...]) == 1


def test_orbax_round_trip_gives_the_same_next_update(tmp_path):
  tx = dj.dualoptim(1e-3, 1e-2)
  params = make_params()
  state = tx.init(params)
  for i, objective in enumerate(["forget", "retain", "retain"]):
    _, state = tx.update(grads_like(params, i), state, params, objective=objective)

  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(3, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    restored = manager.restore(3, args=ocp.args.StandardRestore(abstract))

  assert isinstance(restored, dj.DualState)
  assert trees_bitwise_equal(restored, state)
  grads = grads_like(params, 9)
  for objective in ["forget", "retain"]:
    expected = tx.update(grads, state, params, objective=objective)
    got = tx.update(grads, restored, params, objective=objective)
    assert trees_bitwise_equal(got, expected)


@pytest.mark.parametrize(
  "make_tx", [lambda: dj.dualoptim(1e-3, 1e-2), lambda: dj.shared_sgd(1e-2, 1e-3)]
)
def test_unknown_or_missing_objective_names_the_known_labels(make_tx):
  tx = make_tx()
  params = make_params()
  state = tx.init(params)
  with pytest.raises(ValueError, match="'forget'.*'retain'"):
    tx.update(params, state, params, objective="forgett")
  with pytest.raises(ValueError, match="objective"):
    tx.update(params, state, params)
  with pytest.raises(ValueError, match="static"):
    jax.jit(lambda o: tx.update(params, state, params, objective=o))(jnp.array(0))


def test_mismatched_trees_raise_clear_errors():
  tx = dj.dualoptim(1e-3, 1e-2)
  params = make_params()
  state = tx.init(params)
  with pytest.raises(ValueError, match="structure"):
    tx.update({"conv": params["conv"]}, state, params, objective="forget")
  with pytest.raises(ValueError, match=r"\['bias'\].*shape"):
    tx.update({**params, "bias": jnp.ones(3)}, state, params, objective="forget")
  other = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="optimizer state of objective 'retain'"):
    tx.update(other, state, other, objective="retain")


def test_empty_mappings_are_rejected():
  with pytest.raises(ValueError, match="at least one objective"):
    dj.dual_transform({})
  with pytest.raises(ValueError, match="at least one objective"):
    dj.shared_transform(optax.sgd, {})


def test_shared_transform_rejects_objective_dependent_state_structure():
  def factory(learning_rate):
    return optax.adam(learning_rate) if learning_rate(0) > 0.05 else optax.sgd(learning_rate)

  tx = dj.shared_transform(factory, {"forget": 0.1, "retain": 0.01})
  with pytest.raises(ValueError, match="another structure"):
    tx.init(make_params())


def test_dual_training_reduces_both_objectives_on_a_small_problem():
  """Forget fits w to +1 with AdamW, retain fits b to -1 with SGD; both losses go to ~0."""
  tx = dj.dualoptim(0.05, 0.05)
  params = {"w": jnp.zeros(3), "b": jnp.zeros(3)}
  state = tx.init(params)
  losses = {
    "forget": lambda p: jnp.sum((p["w"] - 1.0) ** 2),
    "retain": lambda p: jnp.sum((p["b"] + 1.0) ** 2),
  }
  schedule = dj.epoch_blocks(2, 5, epochs=60)
  for objective in schedule:
    grads = jax.grad(losses[objective])(params)
    updates, state = tx.update(grads, state, params, objective=objective)
    params = optax.apply_updates(params, updates)
  assert float(losses["forget"](params)) < 0.05
  assert float(losses["retain"](params)) < 1e-3
