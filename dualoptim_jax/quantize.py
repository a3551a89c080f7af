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

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


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

  Args:
    signed: whether to build the signed map (else the unsigned one).

  Returns:
    The code table.
  """
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
  Their float32 distances to ``y`` are compared; exact ties go to ``k - 1``.
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


@functools.partial(jax.jit, static_argnames="block_size")
def quantize_blockwise(
    x: jax.Array, code: jax.Array, block_size: int = 256
) -> tuple[jax.Array, jax.Array]:
  """Quantises ``x`` blockwise to indices into ``code``.

  ``x`` is flattened (as float32) into blocks of ``block_size`` elements, the
  last one possibly partial. For block ``b``, ``absmax_b = max_i |x_i|`` and,
  with the float32 reciprocal ``r_b = fl(1 / absmax_b)`` (``r_b = 0`` for an
  all-zero block), ``q_i = argmin_k |code_k - fl(x_i r_b)|``; exact ties go to
  the lower index. An all-zero block thus maps to the index of ``code``'s 0.

  Args:
    x: array of any shape, including a scalar.
    code: sorted ascending code table, e.g. :func:`dynamic_map`.
    block_size: number of elements per block (static under ``jax.jit``).

  Returns:
    ``(codes, absmax)``: uint8 indices of ``x``'s shape and the float32
    per-block scales of shape ``(ceil(x.size / block_size),)``.
  """
  x = jnp.asarray(x, jnp.float32)
  # Zero padding cannot raise the block maximum of |x|.
  blocks = _blocks(x.reshape(-1), block_size)
  absmax = jnp.max(jnp.abs(blocks), axis=1)
  recip = 1.0 / jnp.where(absmax > 0, absmax, jnp.inf)  # 0 for an all-zero block.
  codes = _nearest(jnp.asarray(code, jnp.float32), blocks * recip[:, None])
  codes = codes.astype(jnp.uint8).reshape(-1)[: x.size].reshape(x.shape)
  return codes, absmax


@functools.partial(jax.jit, static_argnames="block_size")
def dequantize_blockwise(
    codes: jax.Array, absmax: jax.Array, code: jax.Array, block_size: int = 256
) -> jax.Array:
  """Inverse of :func:`quantize_blockwise`: ``x_i ~= code[q_i] * absmax_b``.

  Args:
    codes: uint8 indices into ``code``, of any shape.
    absmax: float32 per-block scales, ``(ceil(codes.size / block_size),)``.
    code: the code table used to quantise.
    block_size: number of elements per block (static under ``jax.jit``).

  Returns:
    A float32 array of ``codes``' shape.
  """
  blocks = _blocks(codes.reshape(-1).astype(jnp.int32), block_size)
  values = jnp.asarray(code, jnp.float32)[blocks] * absmax[:, None]
  return values.reshape(-1)[: codes.size].reshape(codes.shape)


class QuantizedArray(NamedTuple):
  """Blockwise 8-bit form of an array; the block size is kept by the caller."""

  codes: jax.Array  # uint8, the array's shape.
  absmax: jax.Array  # float32, (n_blocks,).


def quantize(x: jax.Array, signed: bool = True, block_size: int = 256) -> QuantizedArray:
  """Quantises ``x`` with the signed or unsigned :func:`dynamic_map`."""
  return QuantizedArray(*quantize_blockwise(x, dynamic_map(signed), block_size))


def dequantize(q: QuantizedArray, signed: bool = True, block_size: int = 256) -> jax.Array:
  """Reconstructs the float32 array stored in ``q``."""
  return dequantize_blockwise(q.codes, q.absmax, dynamic_map(signed), block_size)
