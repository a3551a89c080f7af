"""DualOptim+ against hand-computed steps, a float64 replay of its update, and its reductions."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import dualoptim_jax as dj

from helpers import run_updates


def test_hand_computed_steps():
  # All betas 0.5, lr 0.1, eps 0, no decay, theta0 = 1.
  # T1 forget g=2:  M^=V^=0; m=1, v=2; m^=2, v^=4; dir 1 -> 0.9;  M=1, V=2
  # T2 retain g=-1: M^=2, V^=4; m=-1.5, v=-1.5; m^=-3, v^=-3; (-3+2)/sqrt|-3+4| = -1 -> 1.0;
  #                 M=0, V=1.5
  # T3 retain g=1:  M^=0, V^=2; m=-0.25, v=-1.25; m^=-1/3, v^=-5/3; (-1/3)/sqrt(1/3) -> 1.057735;
  #                 M=0.5, V=1.25
  # T4 forget g=.5: M^=4/7, V^=10/7; m=0.4642857, v=0.4107143; m^=0.6190476, v^=0.5476190;
  #                 1.1904762/sqrt(1.9761905) = 0.8468559 -> 0.9730494
  tx = dj.dualoptim_plus(0.1, b1=0.5, b2=0.5, base_b1=0.5, base_b2=0.5, eps=0.0, weight_decay=0.0)
  steps = [(2.0, "forget"), (-1.0, "retain"), (1.0, "retain"), (0.5, "forget")]
  trajectory, state = run_updates(
    tx, {"w": jnp.ones(1)}, [({"w": jnp.array([g])}, o) for g, o in steps]
  )
  np.testing.assert_allclose(
    [float(p["w"][0]) for p in trajectory], [0.9, 1.0, 1.057735, 0.9730494], rtol=1e-6
  )
  np.testing.assert_allclose(state.base_mu["w"], [0.5 * 0.5 + 0.5 * 0.5], rtol=1e-6)
  assert int(state.count) == 4
  assert int(state.deltas["forget"].count) == 2 and int(state.deltas["retain"].count) == 2


def test_weight_decay_comes_first():
  # theta0 = 1, lr 0.1, wd 0.5, first step direction 1: 1 * (1 - 0.05) - 0.1 = 0.85.
  tx = dj.dualoptim_plus(0.1, eps=0.0, weight_decay=0.5)
  trajectory, _ = run_updates(tx, {"w": jnp.ones(1)}, [({"w": jnp.array([2.0])}, "forget")])
  np.testing.assert_allclose(trajectory[0]["w"], [0.85], rtol=1e-6)


def plus_replay(theta, grads, objectives, lr_fn, ratio, betas, eps, wd):
  """float64 replay of the reference rule (section 8.3), one leaf."""
  b1, b2, b3, b4 = betas
  M = V = np.zeros_like(theta)
  deltas = {k: [np.zeros_like(theta), np.zeros_like(theta), 0] for k in ("forget", "retain")}
  out = []
  for T, (g, k) in enumerate(zip(grads, objectives, strict=True), start=1):
    m, v, t = deltas[k]
    t += 1
    lr = (ratio if k == "forget" else 1.0) * lr_fn(T - 1)
    theta = theta * (1 - lr * wd)
    M_hat = M / (1 - b3 ** (T - 1)) if T > 1 else M
    V_hat = V / (1 - b4 ** (T - 1)) if T > 1 else V
    m = b1 * m + (1 - b1) * (g - M_hat)
    v = b2 * v + (1 - b2) * (g * g - V_hat)
    theta = theta - lr * (m / (1 - b1**t) + M_hat) / (
      np.sqrt(np.abs(v / (1 - b2**t) + V_hat)) + eps
    )
    M = b3 * M + (1 - b3) * g
    V = b4 * V + (1 - b4) * g * g
    deltas[k] = [m, v, t]
    out.append(theta)
  return out


def test_matches_float64_replay_with_schedule_ratio_and_mask():
  objectives = [dj.alternating(1, 5)(t) for t in range(14)]
  rng = np.random.default_rng(0)
  params = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,))}
  grads = [{k: rng.normal(size=v.shape) + 0.5 for k, v in params.items()} for _ in objectives]
  schedule = optax.linear_schedule(0.01, 0.002, 14)
  betas = (0.9, 0.95, 0.8, 0.9)
  tx = dj.dualoptim_plus(
    schedule,
    forget_lr_ratio=1.5,
    b1=betas[0],
    b2=betas[1],
    base_b1=betas[2],
    base_b2=betas[3],
    weight_decay=0.1,
    mask={"a": True, "b": False},
  )
  jax_tree = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), t)  # noqa: E731
  trajectory, _ = run_updates(
    tx, jax_tree(params), [(jax_tree(g), o) for g, o in zip(grads, objectives, strict=True)]
  )
  for key, wd in (("a", 0.1), ("b", 0.0)):
    expected = plus_replay(
      params[key],
      [g[key] for g in grads],
      objectives,
      lambda k: float(schedule(k)),
      1.5,
      betas,
      1e-8,
      wd,
    )
    for got, want in zip(trajectory, expected, strict=True):
      np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=1e-6)


def test_first_step_is_an_adam_step():
  params = {"w": jnp.array([0.3, -2.0, 5.0])}
  grads = {"w": jnp.array([0.1, -4.0, 2.0])}
  plus = dj.dualoptim_plus(0.01, weight_decay=0.0)
  adam = optax.adam(0.01, b1=0.9, b2=0.95)
  for objective in ("forget", "retain"):
    got, _ = plus.update(grads, plus.init(params), params, objective=objective)
    want, _ = adam.update(grads, adam.init(params), params)
    chex.assert_trees_all_close(got, want, rtol=1e-6)


def test_zero_base_reduces_to_decoupled_adamw():
  """With M = V = 0 every step, DualOptim+ is two AdamW states with decay first (torch order)."""
  lr, ratio, wd = 0.02, 2.0, 0.1
  plus = dj.dualoptim_plus(lr, forget_lr_ratio=ratio, weight_decay=wd)
  dual = dj.dual_transform(
    {
      "forget": optax.adamw(ratio * lr, b1=0.9, b2=0.95, weight_decay=wd),
      "retain": optax.adamw(lr, b1=0.9, b2=0.95, weight_decay=wd),
    }
  )
  rng = np.random.default_rng(1)
  params = {"w": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}
  p_plus, p_dual = params, params
  s_plus, s_dual = plus.init(params), dual.init(params)
  for objective in ["forget", "retain", "retain", "forget", "retain", "forget"]:
    grads = {"w": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}
    zero = jax.tree.map(jnp.zeros_like, s_plus.base_mu)
    s_plus = s_plus._replace(base_mu=zero, base_nu=zero)
    u, s_plus = plus.update(grads, s_plus, p_plus, objective=objective)
    p_plus = optax.apply_updates(p_plus, u)
    u, s_dual = dual.update(grads, s_dual, p_dual, objective=objective)
    p_dual = optax.apply_updates(p_dual, u)
    chex.assert_trees_all_close(p_plus, p_dual, rtol=1e-5, atol=1e-7)


def test_untouched_delta_is_bit_identical_and_jit_matches_eager():
  params = {"w": jnp.linspace(-1.0, 1.0, 5000).reshape(50, 100), "b": jnp.ones(7)}
  for bits in (32, 8):
    tx = dj.dualoptim_plus(1e-3, state_bits=bits)

    @functools.partial(jax.jit, static_argnames="objective")
    @chex.assert_max_traces(n=2)
    def step(grads, state, params, objective):
      return tx.update(grads, state, params, objective=objective)  # noqa: B023 (used in-loop)

    state_jit = state_eager = tx.init(params)
    for i, objective in enumerate(["forget", "retain", "retain", "forget"]):
      grads = jax.tree.map(lambda p, i=i: jnp.sin(p * (i + 1)), params)
      before = state_jit.deltas["retain" if objective == "forget" else "forget"]
      u_jit, state_jit = step(grads, state_jit, params, objective=objective)
      u_eager, state_eager = tx.update(grads, state_eager, params, objective=objective)
      after = state_jit.deltas["retain" if objective == "forget" else "forget"]
      assert all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
      )
      chex.assert_trees_all_close(u_jit, u_eager, rtol=1e-5, atol=1e-8)
    chex.clear_trace_counter()


def test_8bit_state_layout():
  params = {"big": jnp.ones((64, 100)), "small": jnp.ones((10,))}
  state = dj.dualoptim_plus(1e-3, state_bits=8, min_8bit_size=4096).init(params)
  for tree in (state.base_mu, state.base_nu, state.deltas["forget"].mu, state.deltas["retain"].nu):
    assert isinstance(tree["big"], dj.QuantizedArray)
    assert tree["big"].codes.dtype == jnp.uint8 and tree["big"].absmax.shape == (25,)
    assert tree["small"].dtype == jnp.float32
  with pytest.raises(ValueError, match="state_bits"):
    dj.dualoptim_plus(1e-3, state_bits=4)


def test_bounded_update_caps_the_degenerate_denominator():
  # Ten forget steps with g = 1, then retain steps with g = 0.3002: at the third retain step
  # v^_r + V^ nearly cancels (float64 replay: a step of about 25 lr) while m^_r + M^ does not.
  params = {"w": jnp.zeros(1)}
  steps = [({"w": jnp.ones(1)}, "forget")] * 10 + [({"w": jnp.full(1, 0.3002)}, "retain")] * 3
  reference, _ = run_updates(dj.dualoptim_plus(0.1, weight_decay=0.0), params, steps)
  bounded, _ = run_updates(
    dj.dualoptim_plus(0.1, weight_decay=0.0, bounded_update=True), params, steps
  )
  ref_steps = np.abs(np.diff([0.0] + [float(p["w"][0]) for p in reference]))
  bounded_steps = np.abs(np.diff([0.0] + [float(p["w"][0]) for p in bounded]))
  assert ref_steps[-1] > 10 * 0.1  # the reference's step blows up (documented behaviour)
  assert np.all(bounded_steps <= 0.1 * (1 + 1e-6))
  # Where the reference's step is within lr the two agree (the first step of each objective).
  within = ref_steps <= 0.1
  assert within.sum() >= 2
  np.testing.assert_allclose(bounded_steps[within], ref_steps[within], rtol=1e-5)


def test_8bit_and_fp32_training_reach_the_same_loss():
  """Linear regression with 8192 weights and conflicting targets, 300 steps.

  Stated tolerance: both cut the retain loss below 5% of its initial value, and the 8-bit final
  loss is within 0.5% of the initial loss of the fp32 one.
  """
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(256, 8192)) / 90.0, jnp.float32)
  w_true = jnp.asarray(rng.normal(size=(8192,)), jnp.float32)
  y_forget, y_retain = x @ w_true, x @ (0.5 * w_true)

  def loss(params, y):
    return jnp.mean((x @ params["w"] - y) ** 2)

  finals = {}
  for bits in (32, 8):
    tx = dj.dualoptim_plus(0.01, weight_decay=0.0, state_bits=bits)

    @functools.partial(jax.jit, static_argnames="objective")
    def step(params, state, objective):
      y = y_forget if objective == "forget" else y_retain
      grads = jax.grad(loss)(params, y)
      updates, state = tx.update(grads, state, params, objective=objective)  # noqa: B023
      return optax.apply_updates(params, updates), state

    params = {"w": jnp.zeros(8192)}
    state = tx.init(params)
    for objective in dj.alternating(1, 5, total_steps=300):
      params, state = step(params, state, objective)
    finals[bits] = float(loss(params, y_retain))
  initial = float(loss({"w": jnp.zeros(8192)}, y_retain))
  assert finals[32] < 0.05 * initial and finals[8] < 0.05 * initial
  assert abs(finals[8] - finals[32]) <= 0.005 * initial


def test_8bit_state_orbax_round_trip(tmp_path):
  params = {"w": jnp.linspace(-1.0, 1.0, 8192).reshape(64, 128)}
  tx = dj.dualoptim_plus(1e-3, state_bits=8)
  state = tx.init(params)
  for objective in ["forget", "retain"]:
    _, state = tx.update(jax.tree.map(jnp.cos, params), state, params, objective=objective)
  with ocp.CheckpointManager(tmp_path) as manager:
    manager.save(0, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = manager.restore(0, args=ocp.args.StandardRestore(abstract))
  assert isinstance(restored.base_mu["w"], dj.QuantizedArray)
  assert restored.base_mu["w"].codes.dtype == jnp.uint8
  grads = jax.tree.map(jnp.sin, params)
  want = tx.update(grads, state, params, objective="retain")
  got = tx.update(grads, restored, params, objective="retain")
  assert all(
    np.array_equal(a, b) for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True)
  )
