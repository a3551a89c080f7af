"""DualOptim recipes against hand-computed steps and float64 replays of the PyTorch formulas."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dualoptim_jax as dj

from helpers import run_updates


def scalar_steps(tx, theta0, grads, objective):
  params = {"w": jnp.array([theta0], jnp.float32)}
  trajectory, _ = run_updates(
    tx, params, [({"w": jnp.array([g], jnp.float32)}, objective) for g in grads]
  )
  return [float(p["w"][0]) for p in trajectory]


# ---- float64 replays of the PyTorch update rules (independent of optax) ----


def torch_sgd(theta, g, buf, lr, momentum, wd):
  d = g + wd * theta
  buf = d if buf is None else momentum * buf + d
  return theta - lr * buf, buf


def torch_adamw(theta, g, m, v, t, lr, b1, b2, eps, wd):
  theta = theta * (1 - lr * wd)
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g * g
  mhat, vhat = m / (1 - b1**t), v / (1 - b2**t)
  return theta - lr * mhat / (np.sqrt(vhat) + eps), m, v


def bnb_adamw_decay_after(theta, g, m, v, t, lr, b1, b2, eps, wd, decays=True):
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g * g
  theta = theta - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
  if decays:
    theta = theta * (1 - lr * wd)
  return theta, m, v


# ---- hand-computed trajectories ----


def test_sgd_l2_hand_computed():
  # lr 0.1, momentum 0.5, L2 0.1, theta0 = 1:
  # t1: d = 1 + 0.1*1 = 1.1;             b = 1.1;                 theta = 1 - 0.11 = 0.89
  # t2: d = -2 + 0.1*0.89 = -1.911;      b = 0.55 - 1.911 = -1.361; theta = 0.89 + 0.1361 = 1.0261
  # t3: d = 0.5 + 0.10261 = 0.60261;     b = -0.6805 + 0.60261 = -0.07789; theta = 1.0338890
  got = scalar_steps(dj.sgd_l2(0.1, momentum=0.5, weight_decay=0.1), 1.0, [1.0, -2.0, 0.5], None)
  np.testing.assert_allclose(got, [0.89, 1.0261, 1.033889], rtol=1e-6)


def test_dualoptim_forget_is_torch_adamw_hand_computed():
  # lr 0.1, b1 0.5, b2 0.75, eps 0, decoupled decay 0.1 on the PRE-update weights, theta0 = 1:
  # t1: theta = 0.99; m = 0.5, v = 0.25; mhat = vhat = 1;          theta = 0.99 - 0.1 = 0.89
  # t2: theta = 0.8811; m = -0.75, v = 1.1875; mhat = -1, vhat = 1.1875/0.4375 = 2.7142857
  #     theta = 0.8811 + 0.1/sqrt(2.7142857) = 0.8811 + 0.0606977 = 0.9417977
  tx = dj.dualoptim(
    0.1, 0.01, forget_b1=0.5, forget_b2=0.75, forget_eps=0.0, forget_weight_decay=0.1
  )
  got = scalar_steps(tx, 1.0, [1.0, -2.0], "forget")
  np.testing.assert_allclose(got, [0.89, 0.9417977], rtol=1e-6)


def test_dualoptim_llm_decays_after_the_step_hand_computed():
  # lr 0.1, eps 0, wd 0.1, theta0 = 1, g = 1: Adam direction 1.
  # decay after: (1 - 0.1) * (1 - 0.01) = 0.891   (decay before would give 0.89)
  # t2 (g = -2, b1 0.5, b2 0.75): direction -0.6069770 (as above);
  #     (0.891 + 0.0606977) * 0.99 = 0.9421807
  tx = dj.dualoptim_llm(0.1, b1=0.5, b2=0.75, eps=0.0, weight_decay=0.1)
  got = scalar_steps(tx, 1.0, [1.0, -2.0], "retain")
  np.testing.assert_allclose(got, [0.891, 0.9421807], rtol=1e-6)


# ---- multi-step replays with interleaved objectives ----

OBJECTIVES = ["forget", "forget", "retain", "retain", "retain", "forget", "retain", "forget"]


def random_problem(seed=0, objectives=OBJECTIVES):
  rng = np.random.default_rng(seed)
  params = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=(5,))}
  grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in objectives]
  return params, grads


def to_jax(tree):
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def test_dualoptim_matches_torch_replay_with_separate_states():
  lr_f, lr_r = 0.05, 0.1
  params, grads = random_problem()
  tx = dj.dualoptim(lr_f, lr_r, forget_weight_decay=0.2, retain_weight_decay=0.01)
  trajectory, state = run_updates(
    tx, to_jax(params), [(to_jax(g), o) for g, o in zip(grads, OBJECTIVES, strict=True)]
  )

  for key in params:
    theta, m, v, buf, t = params[key].copy(), 0.0, 0.0, None, 0
    for (g, objective), got in zip(zip(grads, OBJECTIVES, strict=True), trajectory, strict=True):
      if objective == "forget":
        t += 1
        theta, m, v = torch_adamw(theta, g[key], m, v, t, lr_f, 0.9, 0.999, 1e-8, 0.2)
      else:
        theta, buf = torch_sgd(theta, g[key], buf, lr_r, 0.9, 0.01)
      np.testing.assert_allclose(got[key], theta, rtol=2e-5, atol=1e-6)
  assert int(state.count) == len(OBJECTIVES)
  assert int(optax.tree.get(state.inner_states["forget"], "count")) == OBJECTIVES.count("forget")


def test_shared_sgd_shares_momentum_and_switches_lr():
  lr_f, lr_r = 0.2, 0.01
  params, grads = random_problem(1)
  tx = dj.shared_sgd(lr_f, lr_r)
  trajectory, _ = run_updates(
    tx, to_jax(params), [(to_jax(g), o) for g, o in zip(grads, OBJECTIVES, strict=True)]
  )
  for key in params:
    theta, buf = params[key].copy(), None
    for (g, objective), got in zip(zip(grads, OBJECTIVES, strict=True), trajectory, strict=True):
      lr = lr_f if objective == "forget" else lr_r
      theta, buf = torch_sgd(theta, g[key], buf, lr, 0.9, 5e-4)
      np.testing.assert_allclose(got[key], theta, rtol=2e-5, atol=1e-6)


def test_shared_adamw_shares_moments_and_decays_with_the_step_lr():
  lr_f, lr_r = 0.05, 0.002
  params, grads = random_problem(2)
  tx = dj.shared_adamw(lr_f, lr_r, weight_decay=0.3)
  trajectory, _ = run_updates(
    tx, to_jax(params), [(to_jax(g), o) for g, o in zip(grads, OBJECTIVES, strict=True)]
  )
  for key in params:
    theta, m, v = params[key].copy(), 0.0, 0.0
    for t, ((g, objective), got) in enumerate(
      zip(zip(grads, OBJECTIVES, strict=True), trajectory, strict=True), start=1
    ):
      lr = lr_f if objective == "forget" else lr_r
      theta, m, v = torch_adamw(theta, g[key], m, v, t, lr, 0.9, 0.999, 1e-8, 0.3)
      np.testing.assert_allclose(got[key], theta, rtol=2e-5, atol=1e-6)


def test_shared_transform_schedule_counts_every_objective():
  schedule = lambda count: 0.1 * (count + 1)  # noqa: E731
  tx = dj.shared_transform(optax.sgd, {"forget": schedule, "retain": 0.5})
  params = {"w": jnp.zeros(1)}
  state = tx.init(params)
  lrs = []
  for objective in ["forget", "retain", "forget", "forget"]:
    updates, state = tx.update({"w": jnp.ones(1)}, state, params, objective=objective)
    lrs.append(-float(updates["w"][0]))
  np.testing.assert_allclose(lrs, [0.1, 0.5, 0.3, 0.4], rtol=1e-6)


@pytest.mark.parametrize("lr, wd", [(1e-3, 0.01), (0.05, 0.1)])
def test_dualoptim_llm_matches_kernel_replay(lr, wd):
  """Two AdamW states, own bias corrections, one global schedule, decay after, masked leaves."""
  ratio, b1, b2 = 1.5, 0.9, 0.95
  objectives = [dj.alternating(1, 5)(t) for t in range(13)]
  params, grads = random_problem(3, objectives)
  warmup, total = 3, 13
  schedule = optax.join_schedules(
    [optax.linear_schedule(0.0, lr, warmup), optax.linear_schedule(lr, 0.0, total - warmup)],
    [warmup],
  )
  mask = {"a": True, "b": False}
  tx = dj.dualoptim_llm(schedule, forget_lr_ratio=ratio, b1=b1, b2=b2, weight_decay=wd, mask=mask)
  trajectory, state = run_updates(
    tx, to_jax(params), [(to_jax(g), o) for g, o in zip(grads, objectives, strict=True)]
  )

  for key in params:
    theta = params[key].copy()
    moments = {"forget": [0.0, 0.0, 0], "retain": [0.0, 0.0, 0]}
    for T, ((g, objective), got) in enumerate(
      zip(zip(grads, objectives, strict=True), trajectory, strict=True), start=1
    ):
      k = T - 1  # the schedule is evaluated on the 0-indexed global step
      s = k / warmup if k < warmup else max(0.0, (total - k) / (total - warmup))
      lr_k = (ratio if objective == "forget" else 1.0) * lr * s
      m, v, t = moments[objective]
      theta, m, v = bnb_adamw_decay_after(
        theta, g[key], m, v, t + 1, lr_k, b1, b2, 1e-8, wd, decays=mask[key]
      )
      moments[objective] = [m, v, t + 1]
      np.testing.assert_allclose(got[key], theta, rtol=3e-5, atol=1e-6)
  # The first step is a forget step at lr 0: params stay, but the forget moments moved.
  np.testing.assert_array_equal(trajectory[0]["a"], to_jax(params)["a"])
  assert int(state.inner_states["forget"].count) == objectives.count("forget")
  assert int(state.inner_states["retain"].count) == objectives.count("retain")


def test_dualoptim_llm_clips_by_global_norm_first():
  tx = dj.dualoptim_llm(0.1, b1=0.0, b2=0.0, eps=0.0, weight_decay=0.0, max_grad_norm=1.0)
  params = {"w": jnp.zeros(2)}
  state = tx.init(params)
  # b1 = b2 = 0 makes the Adam direction sign(g): clipping is visible only through the moments.
  _, state = tx.update({"w": jnp.array([3.0, 4.0])}, state, params, objective="forget")
  mu = optax.tree.get(state, "DualState").inner_states["forget"].mu["w"]
  chex.assert_trees_all_close(mu, jnp.array([0.6, 0.8]), rtol=1e-6)


def test_dualoptim_llm_mask_function_and_missing_params():
  tx = dj.dualoptim_llm(0.1, eps=0.0, weight_decay=0.5, mask=lambda p: {"w": False, "b": True})
  params = {"w": jnp.ones(1), "b": jnp.ones(1)}
  state = tx.init(params)
  updates, _ = tx.update(params, state, params, objective="retain")
  np.testing.assert_allclose(updates["w"], [-0.1], rtol=1e-5)  # no decay
  np.testing.assert_allclose(updates["b"], [-(0.1 + 0.05 * 0.9)], rtol=1e-5)  # decay after
  with pytest.raises(ValueError, match="params"):
    tx.update(params, state, None, objective="retain")
