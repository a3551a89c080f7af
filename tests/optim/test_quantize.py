"""Tests for blockwise 8-bit quantisation with the dynamic tree code."""

import hashlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dualoptim_jax.optim import quantize as qz

# Entries of bitsandbytes' create_dynamic_map(signed) (max_exponent_bits=7, total_bits=8).
_SIGNED_ENTRIES = {
  0: "-0.99296874",
  1: "-0.9789063",
  2: "-0.96484375",
  20: "-0.7117188",
  30: "-0.5710938",
  46: "-0.34609374",
  63: "-0.107031256",
  64: "-0.09859375",
  80: "-0.05359375",
  100: "-0.00746875",
  126: "-5.5000004e-07",
  127: "0.0",
  128: "5.5000004e-07",
  129: "3.2500002e-06",
  191: "0.107031256",
  200: "0.23359375",
  220: "0.5148437",
  234: "0.7117188",
  253: "0.9789063",
  254: "0.99296874",
  255: "1.0",
}
_UNSIGNED_ENTRIES = {
  0: "0.0",
  1: "3.2500003e-07",
  2: "7.75e-07",
  46: "0.005359375",
  63: "0.010703126",
  64: "0.012109376",
  92: "0.051484372",
  100: "0.06273438",
  126: "0.099296875",
  127: "0.103515625",
  128: "0.11054687",
  129: "0.11757813",
  148: "0.25117186",
  186: "0.51835936",
  191: "0.5535157",
  200: "0.61679685",
  253: "0.9894531",
  254: "0.9964844",
  255: "1.0",
}
# SHA-256 of the whole little-endian float32 table.
_SHA256 = {
  True: "e732639a65f497b4ad684bb166a4467708255edd5207757de8b8f0c7e1fda89c",
  False: "305f002cc11278fb769d13b25b9fd0c7c83c8402c40a878fe086f4039fde6398",
}
_ZERO_INDEX = {True: 127, False: 0}


def _reference(x, code, block_size):
  """Brute force: per-block absmax and |code_k - y_i| for every element and entry."""
  flat = np.asarray(x, np.float32).reshape(-1)
  starts = range(0, flat.size, block_size)
  absmax = np.array([np.max(np.abs(flat[s : s + block_size])) for s in starts], np.float32)
  recip = np.zeros_like(absmax)
  np.divide(np.float32(1.0), absmax, out=recip, where=absmax > 0)
  y = flat * np.repeat(recip, block_size)[: flat.size]
  return absmax, np.abs(code[None, :] - y[:, None])


@pytest.mark.parametrize("signed, entries", [(True, _SIGNED_ENTRIES), (False, _UNSIGNED_ENTRIES)])
def test_dynamic_map_known_entries(signed, entries):
  code = np.asarray(qz.dynamic_map(signed))
  idx = np.array(list(entries))
  np.testing.assert_array_equal(code[idx], np.array(list(entries.values()), np.float32))


@pytest.mark.parametrize("signed", [True, False])
def test_dynamic_map_is_bit_exact(signed):
  table = np.asarray(qz.dynamic_map(signed)).astype("<f4")
  assert hashlib.sha256(table.tobytes()).hexdigest() == _SHA256[signed]


@pytest.mark.parametrize("signed", [True, False])
def test_dynamic_map_properties(signed):
  code = qz.dynamic_map(signed)
  chex.assert_shape(code, (256,))
  chex.assert_type(code, jnp.float32)
  code = np.asarray(code)
  assert np.all(np.diff(code) > 0)
  np.testing.assert_array_equal(np.nonzero(code == 0.0)[0], [_ZERO_INDEX[signed]])
  assert code.max() == np.float32(1.0)
  assert code.min() == (np.float32("-0.99296874") if signed else np.float32(0.0))


@pytest.mark.parametrize("signed", [True, False])
def test_dynamic_map_decades(signed):
  # Decade 10^(e-6) holds 2^e (signed) or 2^(e+1) (unsigned) positive entries, besides 1.0.
  pos = np.asarray(qz.dynamic_map(signed), np.float64)
  pos = pos[(pos > 0) & (pos < 1)]
  counts = [np.sum((pos > 10.0 ** (e - 7)) & (pos < 10.0 ** (e - 6))) for e in range(7)]
  assert counts == [2 ** (e + (not signed)) for e in range(7)]


def test_signed_map_mirrors_around_zero():
  code = np.asarray(qz.dynamic_map(True))
  # code[127 - j] == -code[127 + j] for j = 1..127; 1.0 has no negative partner.
  np.testing.assert_array_equal(code[126::-1], -code[128:255])
  assert np.all(code[:127] < 0) and np.all(code[128:] > 0)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize(
  "shape, block_size", [((1000,), 256), ((3, 257), 256), ((64, 64), 64), ((5, 7, 11), 128)]
)
def test_quantize_matches_brute_force(signed, shape, block_size):
  x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
  if not signed:
    x = np.abs(x)
  code = qz.dynamic_map(signed)
  codes, absmax = qz.quantize_blockwise(x, code, block_size)
  codes, code = np.asarray(codes), np.asarray(code)
  ref_absmax, dist = _reference(x, code, block_size)
  # Blocks along the last axis when it holds whole blocks: the flattened leaf's blocks, in order.
  rows = shape[-1] % block_size == 0
  assert absmax.shape == ((*shape[:-1], shape[-1] // block_size) if rows else ref_absmax.shape)
  np.testing.assert_array_equal(absmax, ref_absmax.reshape(absmax.shape))
  # The chosen entry is a nearest one; it is the brute-force argmin unless that is an exact tie.
  got = np.take_along_axis(dist, codes.reshape(-1, 1).astype(np.int64), axis=1)[:, 0]
  np.testing.assert_array_equal(got, dist.min(axis=1))
  ties = np.sum(dist == dist.min(axis=1, keepdims=True), axis=1) > 1
  np.testing.assert_array_equal(codes.reshape(-1)[~ties], dist.argmin(axis=1)[~ties])

  deq = np.asarray(qz.dequantize_blockwise(codes, absmax, code, block_size)).reshape(-1)
  scale = np.repeat(np.asarray(absmax).reshape(-1), block_size)[: x.size]
  np.testing.assert_array_equal(deq, code[codes.reshape(-1)] * scale)
  half_gap = np.diff(code).max() / 2
  err = np.abs(deq - x.reshape(-1))
  assert np.all(err <= scale * (half_gap + 1e-6))


@pytest.mark.parametrize(
  "absmax, x, index",
  [
    # fl(x * fl(1 / absmax)) and fl(x / absmax) lie either side of a midpoint of the code.
    ("0.689231", "0.6310771", 249),
    ("1.783903", "0.12320081", 179),
    ("1.1902757", "0.10228932", 186),
  ],
)
def test_quantize_multiplies_by_float32_reciprocal(absmax, x, index):
  block = np.array([absmax, x], np.float32)
  codes, _ = qz.quantize_blockwise(block, qz.dynamic_map(True), 2)
  np.testing.assert_array_equal(codes, [255, index])


@pytest.mark.parametrize("signed", [True, False])
def test_all_zero_block(signed):
  x = np.random.default_rng(0).uniform(0.5, 2.0, (4, 8)).astype(np.float32)
  x[1] = 0.0
  code = qz.dynamic_map(signed)
  codes, absmax = qz.quantize_blockwise(x, code, 8)
  assert absmax[1] == 0.0
  np.testing.assert_array_equal(codes[1], np.full(8, _ZERO_INDEX[signed], np.uint8))
  deq = qz.dequantize_blockwise(codes, absmax, code, 8)
  np.testing.assert_array_equal(deq[1], np.zeros(8, np.float32))
  assert np.all(np.isfinite(deq))


@pytest.mark.parametrize("signed", [True, False])
def test_block_maximum_round_trips_exactly(signed):
  maxima = np.float32([3.0, 0.1, 7.3, 1e-3, 1.5])
  x = np.random.default_rng(1).uniform(-0.99, 0.99, (5, 32)).astype(np.float32) * maxima[:, None]
  if not signed:
    x = np.abs(x)
  x[:, 7] = maxima  # The unique block maxima of |x|.
  code = qz.dynamic_map(signed)
  codes, absmax = qz.quantize_blockwise(x, code, 32)
  np.testing.assert_array_equal(absmax, maxima[:, None])  # one block per row
  np.testing.assert_array_equal(codes[:, 7], np.full(5, 255, np.uint8))
  np.testing.assert_array_equal(qz.dequantize_blockwise(codes, absmax, code, 32)[:, 7], maxima)


def test_partial_last_block():
  x = np.random.default_rng(2).standard_normal(300).astype(np.float32)
  x[256:] = -np.abs(x[256:]) * 1e-3  # A small, all-negative tail must not see the zero padding.
  code = qz.dynamic_map(True)
  codes, absmax = qz.quantize_blockwise(x, code, 256)
  chex.assert_shape([codes, absmax], [(300,), (2,)])
  assert absmax[1] == np.max(np.abs(x[256:]))
  assert codes[np.argmin(x[256:]) + 256] == 0  # -absmax maps to the most negative entry.
  deq = qz.dequantize_blockwise(codes, absmax, code, 256)
  chex.assert_shape(deq, (300,))
  half_gap = np.diff(np.asarray(code)).max() / 2
  assert np.all(np.abs(deq[256:] - x[256:]) <= absmax[1] * (half_gap + 1e-6))


@pytest.mark.parametrize("shape", [(), (1,), (3, 5), (2, 300), (0,)])
def test_shapes_dtypes_and_jit(shape):
  x = jnp.asarray(np.random.default_rng(3).standard_normal(shape), jnp.float32)
  code = qz.dynamic_map(True)
  with jax.disable_jit():
    eager = qz.quantize_blockwise(x, code, 128)
    eager = (*eager, qz.dequantize_blockwise(*eager, code, 128))
  codes, absmax = jax.jit(qz.quantize_blockwise, static_argnames="block_size")(
    x, code, block_size=128
  )
  deq = jax.jit(qz.dequantize_blockwise, static_argnames="block_size")(
    codes, absmax, code, block_size=128
  )
  chex.assert_shape([codes, absmax, deq], [shape, (-(-x.size // 128),), shape])
  chex.assert_type([codes, absmax, deq], [jnp.uint8, jnp.float32, jnp.float32])
  chex.assert_trees_all_equal((codes, absmax, deq), eager)


def test_quantized_array_helpers():
  x = jnp.asarray(np.random.default_rng(4).standard_normal((7, 33)), jnp.float32)
  q = jax.jit(qz.quantize, static_argnums=(1, 2))(x, False, 64)
  assert isinstance(q, qz.QuantizedArray)
  assert len(jax.tree.leaves(q)) == 2 and (q.signed, q.block_size, q.shape) == (False, 64, (7, 33))
  codes, absmax = qz.quantize_blockwise(x, qz.dynamic_map(False), 64)
  chex.assert_trees_all_equal(q, qz.QuantizedArray(codes, absmax, signed=False, block_size=64))
  deq = jax.jit(qz.dequantize)(q)
  chex.assert_trees_all_equal(
    deq, qz.dequantize_blockwise(codes, absmax, qz.dynamic_map(False), 64)
  )
  # The unsigned map's nearest entry to any x < 0 is 0.
  np.testing.assert_array_equal(np.asarray(deq)[np.asarray(x) < 0], 0.0)


def test_quantize_with_a_short_code_table():
  # Any sorted table works, including lengths that are not a power of two.
  code = jnp.asarray([-1.0, -0.25, 0.0, 0.5, 1.0], jnp.float32)
  x = np.float32([4.0, -4.0, -0.6, -0.5, 0.9, 1.1, 2.0, 3.0, 0.1])
  codes, absmax = qz.quantize_blockwise(x, code, 4)
  np.testing.assert_array_equal(absmax, np.float32([4.0, 3.0, 0.1]))
  # y = [1, -1, -0.15, -0.125 | 0.3, 0.3667, 0.6667, 1 | 1]; -0.125 is a tie between -0.25 and 0.
  np.testing.assert_array_equal(codes, [4, 0, 1, 1, 3, 3, 3, 4, 4])


def _nearest_reference(code, y):
  """The exact rule in numpy: of the two entries around y, the nearer in float32; ties go low."""
  assert y.dtype == code.dtype == np.float32
  k = np.clip(np.searchsorted(code, y), 1, code.size - 1)
  lower, upper = code[k - 1], code[k]
  return np.where(np.isnan(y), 1, np.where(y - lower <= upper - y, k - 1, k))


def _with_neighbours(points):
  """The float32 points and their float32 neighbours on both sides."""
  points = np.asarray(points, np.float32)
  up, down = np.float32(np.inf), np.float32(-np.inf)
  return np.concatenate([points, np.nextafter(points, up), np.nextafter(points, down)])


_CODES = {
  "signed": np.asarray(qz.dynamic_map(True)),
  "unsigned": np.asarray(qz.dynamic_map(False)),
  "short": np.float32([-1.0, -0.25, 0.0, 0.5, 1.0]),
}


@pytest.mark.parametrize("name", list(_CODES))
def test_decision_points(name):
  # t_j is the largest float32 not nearer to code[j + 1] than to code[j].
  code = _CODES[name]
  t = qz._decision_points(code)
  lo, hi = code[:-1], code[1:]
  after = np.nextafter(t, np.float32(np.inf))
  assert np.all(t - lo <= hi - t) and np.all(after - lo > hi - after)
  assert np.all(lo <= t) and np.all(t < hi)


@pytest.mark.parametrize("name", list(_CODES))
def test_table_lookup_is_exact_for_every_float32(name):
  # The lookup is constant between consecutive bucket edges and decision points, and the binary
  # search between consecutive decision points and code entries. Checking all these points and
  # their float32 neighbours therefore checks every float32 y, including +-0, +-inf and NaN.
  code = _CODES[name]
  tables = qz._bucket_tables(code)
  assert tables is not None
  key = np.arange(qz._FIRST, qz._LAST + 2, dtype=np.uint32)
  edges = (key << qz._SHIFT).view(np.float32)
  special = np.float32([0.0, 1e-45, 1e-38, 1.0, 2.0, np.inf, np.nan])
  y = _with_neighbours(np.concatenate([edges, qz._decision_points(code), code, special]))
  y = np.concatenate([y, -y])
  expected = _nearest_reference(code, y)
  np.testing.assert_array_equal(qz._lookup(tables, jnp.asarray(y)), expected)
  np.testing.assert_array_equal(qz._nearest(jnp.asarray(code), jnp.asarray(y)), expected)


@pytest.mark.parametrize("name", list(_CODES))
def test_quantize_is_exact_near_entries_and_decision_points(name):
  # Blocks [1, y] quantise y itself: y runs over the code entries, the decision points, +-0 and
  # +-1 with their float32 neighbours, within [-1, 1].
  code = _CODES[name]
  y = _with_neighbours(np.concatenate([code, qz._decision_points(code), [0.0, 1.0]]))
  y = np.concatenate([y, -y, np.float32([-0.0])])
  y = y[np.abs(y) <= 1]
  x = np.stack([np.ones_like(y), y], axis=1)
  codes, absmax = qz.quantize_blockwise(x, code, 2)
  np.testing.assert_array_equal(absmax, np.ones((y.size, 1), np.float32))
  np.testing.assert_array_equal(codes[:, 1], _nearest_reference(code, y))


@pytest.mark.parametrize("signed", [True, False])
def test_table_lookup_matches_binary_search(signed):
  # A concrete code uses the table lookup, a traced one the binary search.
  code = qz.dynamic_map(signed)
  rng = np.random.default_rng(5)
  scale = np.logspace(-40, 30, 64, dtype=np.float32)[:, None]
  x = (rng.standard_normal((64, 256)) * scale).astype(np.float32)
  x[0] = np.asarray(code)[rng.integers(0, 256, 256)]  # Exact code entries, absmax 1.
  x[1, ::2] = -0.0
  x[2] = 0.0
  x[3, 5] = np.inf  # fl(1 / absmax) = 0.
  traced = jax.jit(qz.quantize_blockwise, static_argnames="block_size")
  for block_size in (256, 100):
    chex.assert_trees_all_equal(
      qz.quantize_blockwise(x, code, block_size), traced(x, code, block_size=block_size)
    )


@pytest.mark.parametrize(
  "code",
  [
    np.float32([-1.0, 0.0, 0.5, 0.50000006, 0.5000001, 1.0]),  # Two decision points a bucket.
    np.float32([-1.0, -1e-30, 0.0, 1e-30, 1.0]),  # Decision points near 0.
  ],
)
def test_codes_without_table_use_the_binary_search(code):
  assert qz._bucket_tables(code) is None
  y = _with_neighbours(np.concatenate([code, qz._decision_points(code)]))
  y = y[np.abs(y) <= 1]
  codes, _ = qz.quantize_blockwise(np.stack([np.ones_like(y), y], axis=1), code, 2)
  np.testing.assert_array_equal(codes[:, 1], _nearest_reference(code, y))


def test_dynamic_map_is_concrete_under_jit():
  @jax.jit
  def f(x):
    assert qz._bucket_tables(qz.dynamic_map(True)) is not None
    return qz.quantize(x).codes

  x = jnp.linspace(-1.0, 1.0, 300)
  np.testing.assert_array_equal(f(x), qz.quantize(x).codes)


@pytest.mark.parametrize("shape", [(4, 512), (2, 3, 256), (0, 256)])
def test_blocks_along_rows_are_the_flattened_blocks(shape):
  """A last axis of whole blocks keeps them per row: the scales are those of the flattened
  layout in the same order, and dequantize reads either shape of them."""
  x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
  code = qz.dynamic_map(True)
  codes, absmax = qz.quantize_blockwise(x, code, 256)
  assert absmax.shape == (*shape[:-1], shape[-1] // 256)
  np.testing.assert_array_equal(np.asarray(absmax).reshape(-1), _reference(x, code, 256)[0])
  rows = qz.dequantize_blockwise(codes, absmax, code, 256)
  flat = qz.dequantize_blockwise(codes, absmax.reshape(-1), code, 256)
  np.testing.assert_array_equal(rows, flat)
  assert rows.shape == shape
