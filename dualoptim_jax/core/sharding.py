"""Device meshes: the single-device step functions run data-parallel, with FSDP params and with
ZeRO-1 optimizer states.

A `MeshPlan` lays a train state and its batches out on a ``(data, fsdp)`` device mesh:

* a batch is split along its first axis over both mesh axes (each device holds
  ``batch / (data * fsdp)`` rows);
* an array (a param, a gradient mask, a frozen teacher) of at least ``min_size`` elements is split
  over ``fsdp`` along its largest axis that ``fsdp`` divides (the FSDP rule of MaxText and
  big_vision); smaller arrays, and arrays with no such axis, are replicated;
* optimizer moments follow their params (`optim.state_shardings`, 8-bit blocks included), or, with
  ``zero1``, are split by the same rule over both axes while the params stay as they are (ZeRO
  stage 1: each data-parallel replica updates its slice of the moments).

A jitted program keeps its global view, so a mean over the batch is the mean over the global
batch (BatchNorm statistics included): a sharded run equals a single-device run up to the order of
float reductions.
"""

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dualoptim_jax.core.state import TrainState, init_state
from dualoptim_jax.optim.shardings import state_shardings

DATA, FSDP = "data", "fsdp"


def parse_mesh(text: str) -> dict[str, int]:
  """``"data=4,fsdp=2"`` -> ``{"data": 4, "fsdp": 2}`` (either axis may be left out)."""
  sizes = {}
  for item in filter(None, (part.strip() for part in text.split(","))):
    name, _, value = item.partition("=")
    name = name.strip()
    if name not in (DATA, FSDP) or name in sizes or not value.strip().isdigit():
      raise ValueError(f"Bad mesh {text!r}: expected e.g. 'data=4,fsdp=2' with positive sizes.")
    sizes[name] = int(value)
    if sizes[name] < 1:
      raise ValueError(f"Bad mesh {text!r}: axis sizes must be positive.")
  return sizes


@dataclasses.dataclass(frozen=True)
class MeshPlan:
  """Where every array of a run lives on ``mesh`` (see the module docstring).

  Attributes:
    mesh: a mesh with axes ``data`` and ``fsdp`` (`MeshPlan.create`).
    zero1: split the optimizer moments over both axes, not like the params.
    min_size: arrays with fewer elements are replicated.
  """

  mesh: Mesh
  zero1: bool = False
  min_size: int = 2**14

  @classmethod
  def create(
    cls,
    data: int | None = None,
    fsdp: int = 1,
    *,
    zero1: bool = False,
    min_size: int = 2**14,
    devices: Sequence[jax.Device] | None = None,
  ) -> "MeshPlan":
    """A plan over ``devices`` (default: all, of every process); ``data=None`` takes every
    device left over by ``fsdp``."""
    devices = list(jax.devices() if devices is None else devices)
    if fsdp < 1 or len(devices) % fsdp:
      raise ValueError(f"fsdp={fsdp} does not divide the {len(devices)} devices.")
    data = len(devices) // fsdp if data is None else data
    if data * fsdp != len(devices):
      raise ValueError(
        f"A mesh of data={data} x fsdp={fsdp} needs {data * fsdp} devices; there are "
        f"{len(devices)}."
      )
    mesh = jax.make_mesh(
      (data, fsdp), (DATA, FSDP), axis_types=(AxisType.Auto,) * 2, devices=devices
    )
    return cls(mesh, zero1, min_size)

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P((DATA, FSDP)))

  def sharding(self, shape: Sequence[int], axes: tuple[str, ...] = (FSDP,)) -> NamedSharding:
    """The FSDP rule: split the largest axis of ``shape`` that the ``axes`` divide, if the array
    has at least ``min_size`` elements; else replicate."""
    ways = math.prod(self.mesh.shape[a] for a in axes)
    splittable = [i for i, n in enumerate(shape) if n % ways == 0]
    if ways == 1 or math.prod(shape) < self.min_size or not splittable:
      return self.replicated
    spec = [None] * len(shape)
    spec[max(splittable, key=lambda i: shape[i])] = axes if len(axes) > 1 else axes[0]
    return NamedSharding(self.mesh, P(*spec))

  def shardings(self, tree: Any, axes: tuple[str, ...] = (FSDP,)) -> Any:
    """`sharding` of every array of ``tree`` (arrays or ``jax.ShapeDtypeStruct``s)."""
    return jax.tree.map(lambda x: self.sharding(np.shape(x), axes), tree)

  def put(self, tree: Any) -> Any:
    """``tree`` on the mesh by the FSDP rule (masks, frozen teachers, scalars); an array already
    laid out so is not copied."""
    return jax.device_put(tree, self.shardings(tree))

  def state_shardings(self, state: TrainState, tx: optax.GradientTransformation) -> TrainState:
    """The shardings of a `TrainState` (or its ``jax.eval_shape``) for the optimizer ``tx``."""
    params = self.shardings(state.params)
    moments = self.shardings(state.params, (DATA, FSDP)) if self.zero1 else params
    return TrainState(
      params,
      self.shardings(state.model_state),
      state_shardings(tx, state.params, moments),
      self.replicated,
    )

  def put_state(self, state: TrainState, tx: optax.GradientTransformation) -> TrainState:
    return jax.device_put(state, self.state_shardings(state, tx))

  def put_batch(self, batch: Any) -> Any:
    """A global batch (numpy arrays, first axis the rows) split over the mesh. With several
    processes every process passes the same batch and hands over only the rows of its own devices
    (``jax.make_array_from_process_local_data``)."""

    def put(x):
      x = np.asarray(x)
      if x.ndim == 0:
        raise ValueError("A batch's arrays need a first axis of rows; got a scalar.")
      if x.shape[0] % self.mesh.size:
        raise ValueError(
          f"A batch of {x.shape[0]} rows does not split over the mesh's {self.mesh.size} "
          "devices (data x fsdp)."
        )
      # This process's devices hold consecutive rows (a mesh lists each process's devices together).
      indices = self.batch_sharding.addressable_devices_indices_map(x.shape).values()
      rows = [i[0].indices(x.shape[0]) for i in indices]
      start, stop = min(r[0] for r in rows), max(r[1] for r in rows)
      return jax.make_array_from_process_local_data(self.batch_sharding, x[start:stop], x.shape)

    return jax.tree.map(put, batch)

  def init(
    self, model_fn: Callable[[], nnx.Module], tx: optax.GradientTransformation, seed: int = 0
  ) -> tuple[nnx.GraphDef, TrainState]:
    """`core.init_state` of ``model_fn()`` built directly on the mesh: from abstract shapes, each
    device materialises only its shards."""

    def make():
      return init_state(model_fn(), tx, seed)[1]

    graphdef, *_ = nnx.split(nnx.eval_shape(model_fn), nnx.Param, ...)
    shardings = self.state_shardings(jax.eval_shape(make), tx)
    return graphdef, jax.jit(make, out_shardings=shardings)()

  def jit_step(self, step: Callable, tx: optax.GradientTransformation) -> Callable:
    """``step(state, batch, *, objective, mask, extras)`` jitted with its state laid out by
    this plan (in and out, donated), its metrics replicated, and its batch, mask and extras put
    on the mesh first (arrays already there are not copied)."""
    jitted = {}

    def placed(state, batch, *, objective=None, mask=None, extras=None):
      key = jax.tree.structure(state)
      if key not in jitted:
        shardings = self.state_shardings(state, tx)
        jitted[key] = (
          shardings,
          jax.jit(
            step,
            static_argnames="objective",
            donate_argnums=0,
            out_shardings=(shardings, self.replicated),
          ),
        )
      shardings, fn = jitted[key]
      return fn(
        jax.device_put(state, shardings),
        self.put_batch(batch),
        objective=objective,
        mask=self.put(mask),
        extras=self.put(extras),
      )

    return placed
