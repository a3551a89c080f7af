"""One battery over every transform the library exports, in the manner of optax's contrib tests:
extra arguments, compilation, inject_hyperparams, vmapped learning rates, dtypes, accumulation,
control flow and abstract init."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dualoptim_jax as dj

# name -> (factory, kwargs, the kwarg that a learning-rate grid varies, static_args)
CASES = {
  "dual_transform": (
    lambda learning_rate: dj.dual_transform(
      {"forget": optax.adamw(learning_rate), "retain": optax.sgd(learning_rate, momentum=0.9)}
    ),
    {"learning_rate": 1e-2},
    "learning_rate",
    (),
  ),
  "shared_transform": (
    lambda learning_rate: dj.shared_transform(
      optax.adamw, {"forget": learning_rate, "retain": 0.5 * learning_rate}
    ),
    {"learning_rate": 1e-2},
    "learning_rate",
    (),
  ),
  "dualoptim": (dj.dualoptim, {"forget_lr": 1e-3, "retain_lr": 1e-2}, "forget_lr", ()),
  "shared_sgd": (dj.shared_sgd, {"forget_lr": 1e-3, "retain_lr": 1e-2}, "retain_lr", ()),
  "shared_adamw": (dj.shared_adamw, {"forget_lr": 1e-3, "retain_lr": 1e-2}, "forget_lr", ()),
  "dualoptim_llm": (
    dj.dualoptim_llm,
    {"learning_rate": 1e-3, "forget_lr_ratio": 2.0, "max_grad_norm": 1.0},
    "learning_rate",
    (),
  ),
  "dualoptim_llm_8bit": (
    dj.dualoptim_llm,
    {"learning_rate": 1e-3, "state_bits": 8},
    "learning_rate",
    dj.STRUCTURAL_ARGS,
  ),
  "shared_adamw_llm": (
    dj.shared_adamw_llm,
    {"learning_rate": 1e-3, "max_grad_norm": 1.0},
    "learning_rate",
    (),
  ),
  # DualOptim+'s reference denominator is ill-conditioned in float32 (see its docstring): float32
  # and float64 hyper-parameters, or fused and unfused code, differ by up to 10% of the learning
  # rate in a few elements after four steps. The bounded denominator makes rounding stay rounding.
  "dualoptim_plus": (
    dj.dualoptim_plus,
    {"learning_rate": 1e-3, "bounded_update": True},
    "learning_rate",
    (),
  ),
  "dualoptim_plus_8bit": (
    dj.dualoptim_plus,
    {"learning_rate": 1e-3, "state_bits": 8, "bounded_update": True},
    "learning_rate",
    dj.STRUCTURAL_ARGS,
  ),
  "quantize_moments_adamw": (
    lambda learning_rate: dj.quantize_moments(optax.adamw(learning_rate)),
    {"learning_rate": 1e-3},
    "learning_rate",
    (),
  ),
  "sgd_l2": (dj.sgd_l2, {"learning_rate": 1e-2}, "learning_rate", ()),
  "accumulate_per_objective": (
    lambda learning_rate: dj.accumulate_per_objective(dj.dualoptim_llm(learning_rate), 2),
    {"learning_rate": 1e-3},
    "learning_rate",
    (),
  ),
}
OBJECTIVES = ("forget", "retain", "retain", "forget")
EXACT = {"rtol": 2e-5, "atol": 1e-8}
# Where hyper-parameters arrive as float32 arrays instead of Python floats, or code is fused
# differently (vmap): DualOptim+'s denominator amplifies the rounding a little, and then an 8-bit
# moment can round to the neighbouring code (measured: 4e-6 on updates of 1e-3).
TOLERANCE = {
  "dualoptim_plus": {"rtol": 1e-4, "atol": 1e-7},
  "dualoptim_plus_8bit": {"rtol": 1e-4, "atol": 1e-5},
}


def make_params(dtype=jnp.float32):
  """A leaf large enough for 8-bit states (8,192 elements, blocks along its rows of 256) and a
  small one."""
  return {
    "w": jnp.linspace(-1.0, 1.0, 32 * 256, dtype=jnp.float32).reshape(32, 256).astype(dtype),
    "b": jnp.linspace(0.5, 1.5, 7, dtype=jnp.float32).astype(dtype),
  }


def grads_at(i, params):
  return jax.tree.map(lambda p: jnp.sin(p * (i + 2)).astype(p.dtype), params)


@pytest.fixture(params=list(CASES))
def case(request):
  return CASES[request.param]


@pytest.fixture
def tolerance(request):
  return TOLERANCE.get(request.node.callspec.params["case"], EXACT)


def test_extra_args_are_tolerated_and_each_objective_compiles_once(case):
  factory, kwargs, _, _ = case
  tx = factory(**kwargs)
  params = make_params()
  state = tx.init(params)

  @functools.partial(jax.jit, static_argnames="objective")
  def step(grads, state, params, objective):
    return tx.update(grads, state, params, objective=objective, unexpected=1.0)

  for i, objective in enumerate(OBJECTIVES * 2):
    updates, state = step(grads_at(i, params), state, params, objective=objective)
    params = optax.apply_updates(params, updates)
  assert step._cache_size() == 2
  assert all(bool(jnp.isfinite(u).all()) for u in jax.tree.leaves(updates))


def test_inject_hyperparams_gives_the_same_updates(case, tolerance):
  factory, kwargs, _, static_args = case
  plain = factory(**kwargs)
  injected = optax.inject_hyperparams(factory, static_args=static_args)(**kwargs)
  params = make_params()
  states = [jax.jit(plain.init)(params), jax.jit(injected.init)(params)]
  for i, objective in enumerate(OBJECTIVES):
    grads = grads_at(i, params)
    (u1, s1), (u2, s2) = (
      jax.jit(tx.update, static_argnames="objective")(grads, s, params, objective=objective)
      for tx, s in zip((plain, injected), states, strict=True)
    )
    chex.assert_trees_all_close(u2, u1, **tolerance)
    states = [s1, s2]
    params = optax.apply_updates(params, u1)


def test_a_vmapped_learning_rate_grid_equals_the_loop(case, tolerance):
  factory, kwargs, name, static_args = case
  tx = optax.inject_hyperparams(factory, static_args=static_args)(**kwargs)
  params = make_params()
  grid = jnp.array([0.5, 1.0, 3.0]) * kwargs[name]

  def run(lr):
    state = tx.init(params)
    state.hyperparams[name] = lr
    p = params
    for i, objective in enumerate(OBJECTIVES):
      updates, state = tx.update(grads_at(i, p), state, p, objective=objective)
      p = optax.apply_updates(p, updates)
    return p

  vmapped = jax.jit(jax.vmap(run))(grid)
  for k, lr in enumerate(grid):
    one = jax.tree.map(lambda x, k=k: x[k], vmapped)
    chex.assert_trees_all_close(one, jax.jit(run)(lr), **tolerance)
  assert not np.allclose(vmapped["w"][0], vmapped["w"][2])  # the grid matters


def test_bfloat16_params_keep_their_dtype_and_the_state_its_types(case):
  factory, kwargs, _, _ = case
  tx = factory(**kwargs)
  params = make_params(jnp.bfloat16)
  state = tx.init(params)
  types = jax.tree.map(jax.typeof, state)
  step = jax.jit(tx.update, static_argnames="objective")
  for i, objective in enumerate(OBJECTIVES):
    updates, state = step(grads_at(i, params), state, params, objective=objective)
    assert {u.dtype for u in jax.tree.leaves(updates)} == {jnp.dtype(jnp.bfloat16)}
    params = optax.apply_updates(params, updates)
    assert jax.tree.map(jax.typeof, state) == types
  assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}


def test_accumulation_per_objective_equals_one_step_on_the_mean(case):
  factory, kwargs, _, _ = case
  tx = factory(**kwargs)
  acc = dj.accumulate_per_objective(tx, every_k=2)
  params = make_params()
  g0, g1 = grads_at(0, params), grads_at(1, params)
  state = acc.init(params)
  _, state = acc.update(g0, state, params, objective="retain")
  updates, _ = acc.update(g1, state, params, objective="retain")
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g0, g1)
  expected, _ = tx.update(mean, tx.init(params), params, objective="retain")
  chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-8)


def test_state_is_stable_under_cond_and_scan_and_inits_from_shapes(case):
  factory, kwargs, _, _ = case
  tx = factory(**kwargs)
  params = make_params()
  state = tx.init(params)
  grads = grads_at(0, params)

  def forget(s):
    return tx.update(grads, s, params, objective="forget")[1]

  for pred in (True, False):
    out = jax.jit(lambda s, pred=pred: jax.lax.cond(pred, forget, lambda s: s, s))(state)
    assert jax.tree.map(jax.typeof, out) == jax.tree.map(jax.typeof, state)
  scanned, _ = jax.lax.scan(lambda s, _: (forget(s), None), state, length=3)
  assert jax.tree.map(jax.typeof, scanned) == jax.tree.map(jax.typeof, state)
  shapes = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
  abstract = jax.eval_shape(tx.init, shapes)
  assert jax.tree.structure(abstract) == jax.tree.structure(state)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), abstract) == jax.tree.map(
    lambda a: (a.shape, a.dtype), state
  )


@pytest.mark.parametrize("factory", [dj.dualoptim_llm, dj.dualoptim_plus])
def test_a_traced_structural_argument_names_the_static_args(factory):
  tx = optax.inject_hyperparams(factory)(learning_rate=1e-3, state_bits=8)
  with pytest.raises(TypeError, match=r"state_bits fixes the state's layout.*static_args="):
    tx.init(make_params())
  with pytest.raises(ValueError, match=r"state_bits must be one of \(8, 32\), got 16"):
    factory(1e-3, state_bits=16)
  with pytest.raises(ValueError, match="block_size must be a positive int, got 0"):
    factory(1e-3, state_bits=8, block_size=0)


def test_structural_arguments_take_ints_only():
  assert dj.dualoptim_plus(1e-3, state_bits=np.int64(8), block_size=np.int32(128)) is not None
  with pytest.raises(ValueError, match="block_size must be an int, got True"):
    dj.quantize_moments(optax.adamw(1e-3), block_size=True)
