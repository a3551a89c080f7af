"""Blockwise 8-bit quantisation with the dynamic tree code.

A float32 tensor ``x`` is flattened and split into blocks of ``block_size``
elements (the last block may be partial). Each block ``b`` is stored as its
scale ``absmax_b = max_{i in b} |x_i|`` and one byte per element,

  q_i = argmin_k |code_k - x_i * (1 / absmax_b)|,

and is reconstructed as ``x_i ~= code[q_i] * absmax_b``. ``code`` is the
256-entry dynamic map of Dettmers (2016), as used by the 8-bit optimisers of
bitsandbytes; this module reproduces its table and the semantics of its
blockwise CUDA kernel in pure JAX.

References:
  Dettmers, `8-Bit Approximations for Parallelism in Deep Learning
  <https://arxiv.org/abs/1511.04561>`_, 2016.
  Dettmers et al., `8-bit Optimizers via Block-wise Quantization
  <https://arxiv.org/abs/2110.02861>`_, 2022.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P


def _linspace32(start: float, stop: float, num: int) -> np.ndarray:
  """float32 ``linspace`` with the rounding of ``torch.linspace`` on CPU.

  With ``h = fl32((stop - start) / (num - 1))``, entry ``i`` is
  ``start + i h`` for ``i < num // 2`` and ``stop - (num - 1 - i) h``
  otherwise, each rounded once to float32 as by a fused multiply-add (for the
  arguments used here the float64 evaluation is exact before that rounding).
  """
  start, stop = np.float32(start), np.float32(stop)
  step = np.float64((stop - start) / np.float32(num - 1))
  i = np.arange(num)
  head = np.float64(start) + step * i
  tail = np.float64(stop) - step * (num - 1 - i)
  return np.where(i < num // 2, head, tail).astype(np.float32)


@functools.cache
def _dynamic_map_np(signed: bool) -> np.ndarray:
  """The dynamic map as a read-only sorted float32 numpy array."""
  parts = [np.array([0.0, 1.0], np.float32)]
  for e in range(7):
    # Decade 10^(e-6): the midpoints of 2^e (signed) or 2^(e+1) (unsigned)
    # equal steps of [0.1, 1], scaled by the decade in float32.
    edges = _linspace32(0.1, 1.0, 2 ** (e + (not signed)) + 1)
    mids = (edges[:-1] + edges[1:]) / np.float32(2.0)
    values = np.float32(10.0 ** (e - 6)) * mids
    parts += [values, -values] if signed else [values]
  table = np.sort(np.concatenate(parts))
  table.setflags(write=False)
  return table


def dynamic_map(signed: bool = True) -> jax.Array:
  """The 8-bit dynamic tree code, sorted ascending, as a ``(256,)`` float32.

  Identical, bit for bit, to bitsandbytes'
  ``create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)``: for
  each decade ``10^(e-6)``, ``e = 0..6``, the midpoints of ``2^e`` (signed;
  mirrored to negative values) or ``2^(e+1)`` (unsigned) equal steps of
  ``[0.1, 1]`` scaled by the decade, plus the entries ``0`` and ``1``. The
  signed map spans ``[-0.99296874, 1]`` with ``0`` at index 127; the unsigned
  map spans ``[0, 1]`` with ``0`` at index 0.

  The table is a concrete array even under ``jax.jit``, so that
  :func:`quantize_blockwise` can use its fast path.

  Args:
    signed: whether to build the signed map (else the unsigned one).

  Returns:
    The code table.
  """
  with jax.ensure_compile_time_eval():
    return jnp.asarray(_dynamic_map_np(bool(signed)))


def _blocks(flat: jax.Array, block_size: int) -> jax.Array:
  """Zero-pads a 1-D array to a multiple of ``block_size``; ``(n_blocks, block_size)``."""
  n_blocks = -(-flat.size // block_size)
  return jnp.pad(flat, (0, n_blocks * block_size - flat.size)).reshape(n_blocks, block_size)


def _nearest(code: jax.Array, y: jax.Array) -> jax.Array:
  """Index of the entry of the sorted ``code`` nearest to each ``y``.

  A branchless binary search, unrolled over ``log2(len(code))`` static steps
  (``code`` padded with ``+inf`` to a power-of-two length), gives
  ``k = clip(#{j : code_j < y}, 1, len(code) - 1)``, i.e. ``searchsorted``
  clipped so that ``code[k - 1]`` and ``code[k]`` are the two candidates.
  Their float32 distances to ``y`` are compared; exact ties go to ``k - 1``
  (and NaN gives 1). Used for a traced ``code``; else see :func:`_lookup`.
  """
  n = code.size
  table = jnp.pad(code, (0, (1 << (n - 1).bit_length()) - n), constant_values=jnp.inf)
  k = jnp.zeros(y.shape, jnp.int32)
  step = table.size // 2
  while step:
    k = jnp.where(table[k + step - 1] < y, k + step, k)
    step //= 2
  k = jnp.clip(k, 1, n - 1)
  lower, upper = code[k - 1], code[k]
  return jnp.where(y - lower <= upper - y, k - 1, k)


def _ordinal(x: np.ndarray) -> np.ndarray:
  """float32 -> int64, increasing with the value; ``-0`` and ``0`` both give 0."""
  bits = np.asarray(x, np.float32).view(np.int32).astype(np.int64)
  return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _from_ordinal(k: np.ndarray) -> np.ndarray:
  return np.where(k < 0, -k | 0x80000000, k).astype(np.uint32).view(np.float32)


def _decision_points(code: np.ndarray) -> np.ndarray:
  """The decision points ``t_j`` of :func:`_nearest`, ``j = 0..len(code) - 2``.

  ``t_j`` is the largest float32 ``y`` with ``fl(y - c_j) <= fl(c_{j+1} - y)``,
  i.e. not nearer to ``c_{j+1}`` than to ``c_j``. Both sides are monotone in
  ``y``, so the comparison holds iff ``y <= t_j``, and :func:`_nearest`
  returns ``#{j : t_j < y}`` for every non-NaN ``y``. Found by bisection over
  the float32 values in ``[c_j, c_{j+1})``.
  """
  lo, hi = code[:-1], code[1:]
  a, b = _ordinal(lo), _ordinal(hi)  # The comparison holds at c_j, fails at c_{j+1}.
  while np.any(b - a > 1):
    mid = (a + b) // 2
    y = _from_ordinal(mid)
    holds = y - lo <= hi - y
    a, b = np.where(holds, mid, a), np.where(holds, b, mid)
  return _from_ordinal(a)


# Buckets of y for the table lookup: its sign and |y| >> 16 (the exponent and
# the top 7 mantissa bits), clamped to the keys of 2^-24 and 2. Per sign, 128
# buckets for each binade of [2^-24, 2), with smaller |y| in the first bucket
# and larger |y| (inf included) in the last.
_SHIFT = 16
_FIRST, _LAST = (127 - 24) << 7, 128 << 7
_BUCKETS = _LAST - _FIRST + 1  # Per sign.


def _bucket(y: jax.Array) -> jax.Array:
  bits = jax.lax.bitcast_convert_type(y, jnp.uint32)
  key = jnp.clip((bits & 0x7FFFFFFF) >> _SHIFT, _FIRST, _LAST) - _FIRST
  return (key + (bits >> 31) * _BUCKETS).astype(jnp.int32)


@functools.lru_cache(maxsize=16)
def _bucket_tables_for(code_bytes: bytes) -> tuple[np.ndarray, np.ndarray] | None:
  code = np.frombuffer(code_bytes, np.float32)
  if code.size < 2 or not np.all(np.isfinite(code)) or np.any(np.diff(code) <= 0):
    return None
  t = _decision_points(code)
  if np.any(np.abs(t) < 2.0**-23):
    return None  # Too near 0, where float32 arithmetic may flush subnormals to zero.
  # The smallest and largest |y| of each bucket, then the ends of each signed bucket.
  key = np.arange(_FIRST, _LAST + 1, dtype=np.uint32)
  small = np.where(key > _FIRST, key << _SHIFT, 0).view(np.float32)
  large = np.where(key < _LAST, ((key + 1) << _SHIFT) - 1, 0x7F800000).view(np.float32)
  base = np.searchsorted(t, np.concatenate([small, -large]))  # #{j : t_j < y}
  top = np.searchsorted(t, np.concatenate([large, -small]))
  if np.any(top - base > 1):
    return None  # A bucket holds two decision points.
  return base.astype(np.int32), np.append(t, np.inf).astype(np.float32)[base]


def _bucket_tables(code) -> tuple[np.ndarray, np.ndarray] | None:
  """``(base, t)`` with ``#{j : t_j < y} = base_b + [y > t_b]`` for all ``y`` in bucket ``b``.

  ``None`` for a traced ``code``, or one with two decision points in a bucket
  or any of magnitude below ``2^-23``.
  """
  if isinstance(code, jax.core.Tracer):
    return None
  return _bucket_tables_for(np.asarray(code, np.float32).tobytes())


def _take(table, index: jax.Array) -> jax.Array:
  """``table[index]`` for a small replicated table, sharded like ``index`` (on a mesh too)."""
  return jnp.asarray(table).at[index].get(out_sharding=jax.typeof(index).sharding)


def _lookup(tables: tuple[jax.Array, jax.Array], y: jax.Array) -> jax.Array:
  """:func:`_nearest` by one lookup in :func:`_bucket_tables` and one comparison."""
  base, t = tables
  b = _bucket(y)
  return jnp.where(jnp.isnan(y), 1, _take(base, b) + (y > _take(t, b)))


def rows_of_blocks(shape: tuple[int, ...], block_size: int) -> bool:
  """Whether a leaf's blocks lie along its last axis: ``shape[-1]`` is a multiple of the block.

  Then the blocks of the flattened leaf never cross a row, and they are kept as
  ``shape[:-1] + (shape[-1] // block_size, block_size)``: the same blocks in the same order,
  laid out so that a sharding of the leaf is one of its blocks too (no flattening).
  """
  return len(shape) >= 1 and shape[-1] % block_size == 0


def _local_blocks(x: jax.Array, block_size: int) -> tuple[jax.Array, tuple | None]:
  """``x`` gathered where its blocks would cross its shards, and the spec to give back.

  Under explicit mesh axes a leaf is cut into blocks only where every shard holds whole blocks:
  along rows (:func:`rows_of_blocks`) with its last axis unsharded or split into whole blocks.
  Otherwise (a flattened layout, or a last axis split inside blocks) the leaf is first gathered
  on every device (an all-gather per update), and the result resharded to the leaf's spec. Auto
  axes show no spec here: XLA's propagation decides. Returns ``(x, None)`` when nothing moves.
  """
  sharding = jax.typeof(x).sharding
  spec = tuple(sharding.spec) + (None,) * (x.ndim - len(tuple(sharding.spec)))
  if not any(spec):
    return x, None
  if rows_of_blocks(x.shape, block_size):
    names = spec[-1] if isinstance(spec[-1], tuple) else (spec[-1],) if spec[-1] else ()
    shards = 1
    for name in names:
      shards *= sharding.mesh.shape[name]
    if (x.shape[-1] // shards) % block_size == 0:
      return x, None
    return jax.sharding.reshard(x, P(*spec[:-1], None)), spec
  return jax.sharding.reshard(x, P()), spec


@functools.partial(jax.jit, static_argnums=3)
def _quantize_blockwise(x, code, tables, block_size):
  def quantize_blocks(blocks):
    absmax = jnp.max(jnp.abs(blocks), axis=-1)
    recip = 1.0 / jnp.where(absmax > 0, absmax, jnp.inf)  # 0 for an all-zero block.
    y = blocks * recip[..., None]
    if tables is None:
      codes = _nearest(jnp.asarray(code, jnp.float32), y)
    else:
      codes = _lookup(tables, y)
    return codes.astype(jnp.uint8), absmax

  x, spec = _local_blocks(jnp.asarray(x, jnp.float32), block_size)
  if rows_of_blocks(x.shape, block_size):
    shape = x.shape[:-1] + (x.shape[-1] // block_size, block_size)
    codes, absmax = quantize_blocks(x.reshape(shape))
    codes = codes.reshape(x.shape)
    return (codes, absmax) if spec is None else (jax.sharding.reshard(codes, P(*spec)), absmax)
  flat = x.reshape(-1)
  full = flat.size - flat.size % block_size
  codes, absmax = quantize_blocks(flat[:full].reshape(-1, block_size))
  codes = codes.reshape(-1)
  if full < flat.size:
    # The partial last block, zero-padded: this cannot raise its maximum of |x|.
    last_codes, last_absmax = quantize_blocks(_blocks(flat[full:], block_size))
    codes = jnp.concatenate([codes, last_codes.reshape(-1)[: flat.size - full]])
    absmax = jnp.concatenate([absmax, last_absmax])
  codes = codes.reshape(jnp.shape(x))
  return (codes, absmax) if spec is None else (jax.sharding.reshard(codes, P(*spec)), absmax)


def quantize_blockwise(
  x: jax.Array, code: jax.Array, block_size: int = 256
) -> tuple[jax.Array, jax.Array]:
  """Quantises ``x`` blockwise to indices into ``code``.

  ``x`` is flattened (as float32) into blocks of ``block_size`` elements, the
  last one possibly partial. For block ``b``, ``absmax_b = max_i |x_i|`` and,
  with the float32 reciprocal ``r_b = fl(1 / absmax_b)`` (``r_b = 0`` for an
  all-zero block), ``q_i = argmin_k |code_k - fl(x_i r_b)|``; exact ties go to
  the lower index. An all-zero block thus maps to the index of ``code``'s 0.

  Equivalently ``q_i = #{j : t_j < y_i}``, with ``y_i = fl(x_i r_b)`` and
  ``t_j`` the largest float32 not nearer to ``code_{j+1}`` than to ``code_j``.
  For a concrete ``code`` (e.g. :func:`dynamic_map`, concrete even under
  ``jax.jit``) with at most one ``t_j`` per bucket of the sign, exponent and
  top 7 mantissa bits of ``y``, this count is one table lookup and one
  comparison; otherwise it is a binary search. Both give the same indices.

  Args:
    x: array of any shape, including a scalar.
    code: sorted ascending code table, e.g. :func:`dynamic_map`.
    block_size: number of elements per block (static under ``jax.jit``).

  Returns:
    ``(codes, absmax)``: uint8 indices of ``x``'s shape and the float32
    per-block scales, of shape ``x.shape[:-1] + (x.shape[-1] // block_size,)``
    when the last axis is a multiple of ``block_size`` (see
    :func:`rows_of_blocks`; the same scales as below, in the same order), else
    ``(ceil(x.size / block_size),)``.
  """
  return _quantize_blockwise(x, code, _bucket_tables(code), block_size)


@functools.partial(jax.jit, static_argnames="block_size")
def dequantize_blockwise(
  codes: jax.Array, absmax: jax.Array, code: jax.Array, block_size: int = 256
) -> jax.Array:
  """Inverse of :func:`quantize_blockwise`: ``x_i ~= code[q_i] * absmax_b``.

  Args:
    codes: uint8 indices into ``code``, of any shape.
    absmax: float32 per-block scales, as :func:`quantize_blockwise` returns them.
    code: the code table used to quantise.
    block_size: number of elements per block (static under ``jax.jit``).

  Returns:
    A float32 array of ``codes``' shape.
  """
  codes, spec = _local_blocks(codes, block_size)
  if spec is not None:
    values = dequantize_blockwise(codes, absmax, code, block_size)
    return jax.sharding.reshard(values, P(*spec))
  if rows_of_blocks(codes.shape, block_size):
    grid = codes.shape[:-1] + (codes.shape[-1] // block_size,)
    blocks = codes.reshape(grid + (block_size,)).astype(jnp.int32)
    # absmax.reshape also reads the flattened absmax that states saved before this layout hold.
    values = _take(jnp.asarray(code, jnp.float32), blocks) * absmax.reshape(grid)[..., None]
    return values.reshape(codes.shape)
  blocks = _blocks(codes.reshape(-1).astype(jnp.int32), block_size)
  values = jnp.asarray(code, jnp.float32)[blocks] * absmax[:, None]
  return values.reshape(-1)[: codes.size].reshape(codes.shape)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedArray:
  """Blockwise 8-bit form of an array, a pytree of two arrays.

  Attributes:
    codes: uint8 indices into the signed or unsigned :func:`dynamic_map`, of the array's shape.
    absmax: float32 per-block scales, shaped as :func:`quantize_blockwise` returns them.
    signed: which map (static: part of the tree structure).
    block_size: elements per block (static).
  """

  codes: jax.Array
  absmax: jax.Array
  signed: bool = dataclasses.field(default=True, metadata={"static": True})
  block_size: int = dataclasses.field(default=256, metadata={"static": True})

  @property
  def shape(self) -> tuple[int, ...]:
    """The shape of the array it stores."""
    return self.codes.shape


def quantize(x: jax.Array, signed: bool = True, block_size: int = 256) -> QuantizedArray:
  """Quantises ``x`` with the signed or unsigned :func:`dynamic_map`."""
  codes, absmax = quantize_blockwise(x, dynamic_map(signed), block_size)
  return QuantizedArray(codes, absmax, signed, block_size)


def dequantize(q: QuantizedArray) -> jax.Array:
  """Reconstructs the float32 array stored in ``q``."""
  return dequantize_blockwise(q.codes, q.absmax, dynamic_map(q.signed), q.block_size)
