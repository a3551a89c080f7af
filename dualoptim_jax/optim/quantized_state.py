"""8-bit blockwise optimizer states: the storage rule and a wrapper for any Optax transform.

A moment leaf with at least ``min_8bit_size`` elements is stored as a
:class:`~dualoptim_jax.optim.quantize.QuantizedArray` (uint8 codes of the dynamic map plus a float32
absmax per block of ``block_size``); smaller leaves stay float32, as in bitsandbytes. Each update
dequantizes, runs the float32 maths and requantizes (absmax recomputed per block).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dualoptim_jax.optim.quantize import QuantizedArray, dequantize, quantize

STATE_BITS = (8, 32)
# Arguments that fix the layout of a state. `optax.inject_hyperparams` turns every number it is
# given into a traced hyper-parameter, so these default to None (static there); a number given
# for one must be declared static: ``inject_hyperparams(tx, static_args=STRUCTURAL_ARGS)``.
STRUCTURAL_ARGS = ("state_bits", "block_size", "min_8bit_size")
_DEFAULTS = {"state_bits": 32, "block_size": 256, "min_8bit_size": 4096}


def structural(name: str, value: int | None) -> int:
  """The Python value of the structural argument ``name`` (None: its default)."""
  if value is None:
    return _DEFAULTS[name]
  if isinstance(value, jax.Array):
    raise TypeError(
      f"{name} fixes the state's layout, so it must be a Python int, not a (traced) array; "
      f"with optax.inject_hyperparams declare it static: static_args={STRUCTURAL_ARGS}."
    )
  if isinstance(value, bool) or not isinstance(value, int | np.integer):
    raise ValueError(f"{name} must be an int, got {value!r}.")
  value = int(value)
  if name == "state_bits" and value not in STATE_BITS:
    raise ValueError(f"state_bits must be one of {STATE_BITS}, got {value!r}.")
  if name != "state_bits" and value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")
  return value


def is_quantized(x) -> bool:
  return isinstance(x, QuantizedArray)


def store(x: jax.Array, signed: bool, *, block_size: int = 256, min_8bit_size: int = 4096):
  """``x`` in its stored form: quantized if it is floating point with >= min_8bit_size elements."""
  if jnp.issubdtype(x.dtype, jnp.floating) and x.size >= min_8bit_size:
    return quantize(x, signed, block_size)
  return x


def load(x) -> jax.Array:
  """The float32 value of a stored leaf (identity for leaves kept in full precision)."""
  return dequantize(x) if is_quantized(x) else x


def _is_second_moment(path) -> bool:
  return any(getattr(key, "name", None) == "nu" for key in path)


def quantize_moments(
  inner: optax.GradientTransformation,
  *,
  block_size: int | None = None,
  min_8bit_size: int | None = None,
  is_unsigned: Callable[[tuple], bool] = _is_second_moment,
) -> optax.GradientTransformationExtraArgs:
  """Keeps the floating-point state leaves of ``inner`` in 8-bit blockwise form.

  Every floating-point leaf of the inner state with at least ``min_8bit_size`` elements is stored
  as uint8 codes plus per-block absmax; each update dequantizes the state, runs ``inner`` in float32
  and requantizes. Second moments (state fields named ``nu``, as in ``optax.scale_by_adam``) use the
  unsigned dynamic map, everything else the signed one; ``is_unsigned(path)`` changes that rule.

  ``block_size`` (None: 256) and ``min_8bit_size`` (None: 4096) are structural, see
  ``STRUCTURAL_ARGS``. Example: an 8-bit AdamW, ``quantize_moments(optax.adamw(1e-3))``.
  """
  block_size = structural("block_size", block_size)
  min_8bit_size = structural("min_8bit_size", min_8bit_size)
  inner = optax.with_extra_args_support(inner)

  def encode(state):
    return jax.tree_util.tree_map_with_path(
      lambda path, x: store(
        x, not is_unsigned(path), block_size=block_size, min_8bit_size=min_8bit_size
      ),
      state,
    )

  def decode(state):
    return jax.tree.map(load, state, is_leaf=is_quantized)

  def init_fn(params):
    return encode(inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    new_updates, state = inner.update(updates, decode(state), params, **extra_args)
    # The float32 maths must not promote the updates: they keep the params' (or grads') dtype.
    like = updates if params is None else params
    new_updates = jax.tree.map(lambda u, x: u.astype(x.dtype), new_updates, like)
    return new_updates, encode(state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
