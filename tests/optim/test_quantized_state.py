"""The 8-bit state wrapper: storage rule, maps per moment, and agreement with float32 training."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dualoptim_jax as dj
from dualoptim_jax.optim import quantize

PARAMS = {"big": jnp.linspace(-1.0, 1.0, 6000).reshape(60, 100), "small": jnp.ones(10)}


def test_adamw_moments_are_stored_in_8_bits_with_the_right_maps():
  tx = dj.quantize_moments(optax.adamw(1e-2), min_8bit_size=4096)
  state = tx.init(PARAMS)
  grads = jax.tree.map(lambda p: jnp.cos(3 * p), PARAMS)
  _, state = tx.update(grads, state, PARAMS)
  adam_state = optax.tree.get(state, "ScaleByAdamState")
  assert isinstance(adam_state.mu["big"], dj.QuantizedArray)
  assert isinstance(adam_state.nu["big"], dj.QuantizedArray)
  assert adam_state.mu["small"].dtype == jnp.float32
  assert adam_state.count.dtype == jnp.int32
  # mu is decoded with the signed map and nu with the unsigned one: check against float32 Adam.
  ref = optax.adamw(1e-2)
  _, ref_state = ref.update(grads, ref.init(PARAMS), PARAMS)
  for name, signed in (("mu", True), ("nu", False)):
    stored = getattr(adam_state, name)["big"]
    exact = np.asarray(optax.tree.get(ref_state, name)["big"]).reshape(-1)
    blocks = np.pad(exact, (0, 24 * 256 - exact.size)).reshape(24, 256)
    np.testing.assert_array_equal(stored.absmax, np.abs(blocks).max(1))
    assert stored.signed == signed and stored.block_size == 256
    decoded = np.asarray(quantize.dequantize(stored)).reshape(-1)
    half_gap = np.max(np.diff(np.asarray(quantize.dynamic_map(signed)))) / 2
    bound = np.repeat(np.asarray(stored.absmax), 256)[: exact.size] * half_gap * (1 + 1e-5)
    assert np.all(np.abs(decoded - exact) <= bound + 1e-12)


def test_dualoptim_llm_8bit_keeps_two_quantized_adam_states():
  tx = dj.dualoptim_llm(1e-3, state_bits=8, max_grad_norm=1.0)
  state = tx.init(PARAMS)
  grads = jax.tree.map(jnp.sin, PARAMS)
  step = jax.jit(tx.update, static_argnames="objective")
  updates8, state = step(grads, state, PARAMS, objective="forget")
  updates32, _ = dj.dualoptim_llm(1e-3, max_grad_norm=1.0).update(
    grads, dj.dualoptim_llm(1e-3, max_grad_norm=1.0).init(PARAMS), PARAMS, objective="forget"
  )
  dual = optax.tree.get(state, "DualState")
  for label in ("forget", "retain"):
    assert isinstance(dual.inner_states[label].mu["big"], dj.QuantizedArray)
  # The first step's update uses float32 moments before requantization: identical.
  chex.assert_trees_all_close(updates8, updates32, rtol=1e-6)
  with pytest.raises(ValueError, match="state_bits"):
    dj.dualoptim_llm(1e-3, state_bits=16)


def test_8bit_adamw_trains_like_float32_adamw():
  """Least squares with 8192 weights, 200 steps: final losses within 1% of the initial loss."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(256, 8192)) / 90.0, jnp.float32)
  y = x @ jnp.asarray(rng.normal(size=(8192,)), jnp.float32)
  loss = lambda p: jnp.mean((x @ p["w"] - y) ** 2)  # noqa: E731
  finals = []
  for tx in (
    optax.adamw(0.01, weight_decay=0.0),
    dj.quantize_moments(optax.adamw(0.01, weight_decay=0.0)),
  ):

    @jax.jit
    def step(params, state, tx=tx):
      updates, state = tx.update(jax.grad(loss)(params), state, params)
      return optax.apply_updates(params, updates), state

    params = {"w": jnp.zeros(8192)}
    state = tx.init(params)
    for _ in range(200):
      params, state = step(params, state)
    finals.append(float(loss(params)))
  initial = float(loss({"w": jnp.zeros(8192)}))
  assert max(finals) < 0.05 * initial
  assert abs(finals[0] - finals[1]) <= 0.01 * initial


@pytest.mark.parametrize("tx_8bit", ["quantize_moments", "dualoptim_plus"])
def test_apply_if_finite_keeps_8bit_blocks_clean(tx_8bit):
  """One NaN gradient element would reach the 8-bit moments (its block's absmax and codes) bare;
  under optax.apply_if_finite the step is skipped, every block stays as it was, and the next
  finite step proceeds."""
  make = {
    "quantize_moments": lambda: dj.quantize_moments(optax.adamw(1e-2)),
    "dualoptim_plus": lambda: dj.dualoptim_plus(1e-2, state_bits=8),
  }[tx_8bit]
  grads = jax.tree.map(lambda p: jnp.cos(3 * p), PARAMS)
  bad = {**grads, "big": grads["big"].at[0, 3].set(jnp.nan)}

  guarded = optax.apply_if_finite(make(), max_consecutive_errors=3)
  state = guarded.update(grads, guarded.init(PARAMS), PARAMS, objective="forget")[1]
  updates, after = guarded.update(bad, state, PARAMS, objective="forget")
  assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates))
  chex.assert_trees_all_equal(after.inner_state, state.inner_state)
  assert int(after.notfinite_count) == 1
  updates, after = guarded.update(grads, after, PARAMS, objective="forget")
  assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(after.inner_state))
  assert float(jnp.abs(updates["big"]).max()) > 0
