"""The shardings of an optimizer state, derived from the params' shardings."""

import dataclasses
import math
from typing import Any

import jax
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dualoptim_jax.optim.quantized_state import is_quantized


def state_shardings(tx: optax.GradientTransformation, params: Any, param_shardings: Any) -> Any:
  """A sharding for every leaf of ``tx.init(params)``, e.g. for ``jax.jit(..., out_shardings=)``.

  A state leaf made from a param gets that param's sharding, as ``optax.tree.map_params`` finds
  them; so do an 8-bit moment's codes, and its absmax where the param's sharding splits it evenly
  (blocks along the last axis; else it is replicated). Every other leaf (step counts) is
  replicated on the params' mesh.

  Args:
    tx: the optimizer.
    params: the params or their ``jax.ShapeDtypeStruct``s.
    param_shardings: a ``NamedSharding`` per param.
  """
  meshes = {s.mesh for s in jax.tree.leaves(param_shardings)}
  if len(meshes) != 1:
    raise ValueError(f"param_shardings must share one mesh, got {len(meshes)}.")
  replicated = NamedSharding(meshes.pop(), P())

  def fits(sharding, shape) -> bool:
    """Whether ``sharding`` splits every axis of ``shape`` evenly."""
    spec = tuple(sharding.spec) + (None,) * (len(shape) - len(tuple(sharding.spec)))
    if len(spec) != len(shape):
      return False
    for size, names in zip(shape, spec, strict=True):
      names = names if isinstance(names, tuple) else (names,) if names else ()
      if size % math.prod(sharding.mesh.shape[name] for name in names):
        return False
    return True

  def per_param(leaf, sharding):
    if not is_quantized(leaf):
      return sharding
    absmax = sharding if fits(sharding, leaf.absmax.shape) else replicated
    return dataclasses.replace(leaf, codes=sharding, absmax=absmax)

  abstract = jax.eval_shape(tx.init, params)
  return optax.tree.map_params(
    tx,
    per_param,
    abstract,
    param_shardings,
    transform_non_params=lambda _: replicated,
    is_leaf=is_quantized,
  )
