"""Sharding checks on 8 forced CPU devices; run by test_sharding.py in a process of their own
(the device count is fixed when JAX starts). Not collected by the main run: no test_ prefix."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import dualoptim_jax as dj  # noqa: E402

TRANSFORMS = {
  "dual_transform": lambda: dj.dual_transform(
    {"forget": optax.adamw(1e-3), "retain": optax.sgd(1e-2, momentum=0.9)}
  ),
  "shared_transform": lambda: dj.shared_transform(optax.adamw, {"forget": 1e-3, "retain": 1e-2}),
  "dualoptim": lambda: dj.dualoptim(1e-3, 1e-2),
  "shared_sgd": lambda: dj.shared_sgd(1e-3, 1e-2),
  "shared_adamw": lambda: dj.shared_adamw(1e-3, 1e-2),
  "dualoptim_llm": lambda: dj.dualoptim_llm(1e-3, max_grad_norm=1.0),
  "shared_adamw_llm": lambda: dj.shared_adamw_llm(1e-3, max_grad_norm=1.0),
  "dualoptim_plus": lambda: dj.dualoptim_plus(1e-3),
  "dualoptim_llm_8bit": lambda: dj.dualoptim_llm(1e-3, state_bits=8),
  "dualoptim_plus_8bit": lambda: dj.dualoptim_plus(1e-3, state_bits=8),
  "quantize_moments_adamw": lambda: dj.quantize_moments(optax.adamw(1e-3)),
  "sgd_l2": lambda: dj.sgd_l2(1e-2),
  "accumulate_per_objective": lambda: dj.accumulate_per_objective(dj.dualoptim_llm(1e-3), 2),
}
EIGHT_BIT = {"dualoptim_llm_8bit", "dualoptim_plus_8bit", "quantize_moments_adamw"}
# Param shape -> its sharding; an 8-bit moment's codes share the shape and its per-block absmax
# (blocks of 256 along the last axis) the sharding: (64, 512) -> (64, 2), (16, 4096) -> (16, 16).
ROWS = {(64, 512): ("x", None), (16, 4096): (None, "x"), (7,): (None,)}
ABSMAX = {(64, 2): ("x", None), (16, 16): (None, "x")}
# Gathered before quantizing: a large leaf whose last axis is not a multiple of 256 (flattened
# blocks), and a last axis sharded into pieces that are not whole blocks.
ODD = {"odd width": {(64, 100): ("x", None)}, "split blocks": {(16, 512): (None, "x")}}


def spec(x):
  """The sharding spec of ``x``, one entry per dimension (``P()`` and ``P(None,)`` agree)."""
  entries = tuple(x.sharding.spec)
  return entries + (None,) * (x.ndim - len(entries))


def check(name, jit, axis_type, shapes):
  mesh = jax.make_mesh((8,), ("x",), axis_types=(axis_type,))
  with jax.set_mesh(mesh):
    params = {
      str(shape): jax.device_put(
        jnp.linspace(-1, 1, int(jnp.prod(jnp.array(shape)))).reshape(shape),
        NamedSharding(mesh, P(*entries)),
      )
      for shape, entries in shapes.items()
    }
    tx = TRANSFORMS[name]()
    init = jax.jit(tx.init) if jit else tx.init
    update = jax.jit(tx.update, static_argnames="objective") if jit else tx.update
    state = init(params)
    # Under explicit axes the abstract type carries the sharding: float32[64@x,512].
    before = jax.tree.map(jax.typeof, state)
    if axis_type == AxisType.Explicit or not jit:  # an auto-axes jit may choose its own
      expected = {**shapes, **ABSMAX}
      leaves = [x for x in jax.tree.leaves(state) if x.shape in expected]
      assert leaves and all(spec(x) == expected[x.shape] for x in leaves)
    for objective in ("forget", "retain"):
      grads = jax.tree.map(jnp.sin, params)
      updates, state = update(grads, state, params, objective=objective)
      assert jax.tree.map(jax.typeof, state) == before, objective
      assert all(spec(updates[str(s)]) == e for s, e in shapes.items())


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_state_keeps_its_shardings_through_init_and_updates(name, jit, axis_type):
  check(name, jit, axis_type, ROWS)


@pytest.mark.parametrize("leaf", list(ODD))
@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("name", sorted(EIGHT_BIT))
def test_8bit_leaves_gathered_to_quantize_keep_their_shardings(name, jit, leaf):
  check(name, jit, AxisType.Explicit, ODD[leaf])


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_state_shardings_place_a_jitted_init_like_the_params(name, axis_type):
  """state_shardings derives every leaf's sharding from the params' (optax.tree.map_params),
  also for 8-bit moments; a jitted init with them as out_shardings lays the state out so, under
  auto axes too."""
  shapes = {**ROWS, **ODD["odd width"]}
  mesh = jax.make_mesh((8,), ("x",), axis_types=(axis_type,))
  with jax.set_mesh(mesh):
    shardings = {str(k): NamedSharding(mesh, P(*v)) for k, v in shapes.items()}
    params = {str(k): jax.device_put(jnp.ones(k), shardings[str(k)]) for k in shapes}
    tx = TRANSFORMS[name]()
    state = jax.jit(tx.init, out_shardings=dj.state_shardings(tx, params, shardings))(params)
    expected = {**shapes, **ABSMAX, (25,): (None,)}  # the odd leaf's flattened absmax: replicated
    leaves = [x for x in jax.tree.leaves(state) if x.shape in expected]
    assert leaves and all(spec(x) == expected[x.shape] for x in leaves)
    assert all(spec(x) == () for x in jax.tree.leaves(state) if x.ndim == 0)
