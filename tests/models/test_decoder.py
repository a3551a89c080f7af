"""The decoder LM: causality, RoPE, the cache, and greedy generation against full forward passes."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dualoptim_jax.models.decoder import Decoder, DecoderConfig, greedy_generate, rope

CONFIG = DecoderConfig(vocab_size=61, dim=32, layers=2, heads=4, max_len=32)


@pytest.fixture(scope="module")
def model():
  return Decoder(CONFIG, rngs=nnx.Rngs(0))


def ids(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, CONFIG.vocab_size, shape), jnp.int32)


def test_logits_of_a_position_ignore_later_tokens(model):
  a, b = ids((2, 12)), ids((2, 12), seed=1)
  mixed = jnp.concatenate([a[:, :7], b[:, 7:]], axis=1)
  logits_a, _ = model(a)
  logits_mixed, _ = model(mixed)
  assert logits_a.shape == (2, 12, CONFIG.vocab_size)
  np.testing.assert_allclose(logits_mixed[:, :7], logits_a[:, :7], rtol=1e-5, atol=1e-5)
  assert not np.allclose(logits_mixed[:, 7:], logits_a[:, 7:])


def test_rope_rotates_pairs_and_keeps_relative_positions():
  x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 3, 1, 8)), jnp.float32)
  rotated = rope(x, jnp.arange(3), 10_000.0)
  np.testing.assert_allclose(
    jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-6
  )
  np.testing.assert_allclose(rotated[:, 0], x[:, 0])  # position 0: no rotation
  # q . k depends on the positions only through their difference.
  q, k = x[:, :1], x[:, 1:2]
  dots = [
    float(jnp.sum(rope(q, jnp.array([p + 2]), 1e4) * rope(k, jnp.array([p]), 1e4)))
    for p in (0, 5, 11)
  ]
  np.testing.assert_allclose(dots, dots[0], rtol=1e-5)


def test_the_cache_gives_the_logits_of_a_full_pass(model):
  tokens = ids((2, 10), seed=3)
  full, _ = model(tokens)
  cache = model.init_cache(2)
  prefix, cache = model(tokens[:, :6], cache, 0)
  np.testing.assert_allclose(prefix, full[:, :6], rtol=1e-5, atol=1e-5)
  for t in range(6, 10):
    step, cache = model(tokens[:, t : t + 1], cache, t)
    np.testing.assert_allclose(step[:, 0], full[:, t], rtol=1e-5, atol=1e-5)


def test_greedy_generation_with_the_cache_equals_full_forward_decoding(model):
  prompt = ids((2, 5), seed=4)
  generated = np.asarray(greedy_generate(model, prompt, 9))
  sequence = prompt
  for _ in range(9):
    logits, _ = model(sequence)
    sequence = jnp.concatenate([sequence, jnp.argmax(logits[:, -1], -1)[:, None]], axis=1)
  np.testing.assert_array_equal(generated, np.asarray(sequence[:, 5:]))
  with pytest.raises(ValueError, match="exceed max_len 32"):
    greedy_generate(model, prompt, 30)


def test_left_padded_prompts_generate_as_unpadded_ones(model):
  short, long = ids((1, 4), seed=5), ids((1, 7), seed=6)
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32) + 9, short], axis=1)
  prompts = jnp.concatenate([padded, long], axis=0)
  mask = jnp.asarray([[False] * 3 + [True] * 4, [True] * 7])
  together = np.asarray(greedy_generate(model, prompts, 8, mask))
  np.testing.assert_array_equal(together[0], np.asarray(greedy_generate(model, short, 8))[0])
  np.testing.assert_array_equal(together[1], np.asarray(greedy_generate(model, long, 8))[0])
  # The padding really is hidden: without the mask the short prompt's tokens change.
  unmasked = np.asarray(greedy_generate(model, prompts, 8))
  assert not np.array_equal(unmasked[0], together[0])


def test_bad_configs_are_refused():
  with pytest.raises(ValueError, match="even size"):
    DecoderConfig(vocab_size=10, dim=30, heads=4)
  with pytest.raises(ValueError, match="DecoderConfig.layers must be positive"):
    DecoderConfig(vocab_size=10, layers=0)
