"""A decoder-only language model in Flax NNX (RoPE, RMSNorm, tied embeddings) and a KV-cache
greedy sampler.

Each block is ``x + attn(norm(x))`` then ``x + mlp(norm(x))``, attention causal through
``jax.nn.dot_product_attention``, the MLP ``W2 gelu(W1 x)``; the logits are
``norm(x) @ embedding^T`` (tied). With a cache (one ``(keys, values)`` pair per layer, each
``(batch, max_len, heads, head_dim)``), a call at position ``start`` writes its keys and values
there and attends to every cached position up to its own, so decoding token by token gives the
logits of a full forward pass.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """The architecture. ``dim`` must be a multiple of ``heads``, and ``dim // heads`` even (RoPE)."""

  vocab_size: int
  dim: int = 128
  layers: int = 4
  heads: int = 4
  mlp_ratio: int = 4
  max_len: int = 256
  rope_base: float = 10_000.0
  norm_eps: float = 1e-6

  def __post_init__(self):
    if self.dim % self.heads or (self.dim // self.heads) % 2:
      raise ValueError(f"dim {self.dim} must split into {self.heads} heads of an even size.")
    for name in ("vocab_size", "dim", "layers", "heads", "mlp_ratio", "max_len"):
      if getattr(self, name) < 1:
        raise ValueError(f"DecoderConfig.{name} must be positive, got {getattr(self, name)}.")

  @property
  def head_dim(self) -> int:
    return self.dim // self.heads


def rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
  r"""Rotary embedding of ``x`` ``(batch, time, heads, head_dim)`` at ``positions`` ``(time,)``.

  Pairs :math:`(x_i, x_{i+d/2})` rotate by the angle :math:`p\, \mathrm{base}^{-2i/d}` (the
  "rotate half" convention of GPT-NeoX and Llama).
  """
  half = x.shape[-1] // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions[:, None].astype(jnp.float32) * freqs[None, :]
  cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


class Block(nnx.Module):
  """Pre-norm attention and MLP with residuals."""

  def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
    self.config = config
    dim = config.dim
    self.attn_norm = nnx.RMSNorm(dim, epsilon=config.norm_eps, rngs=rngs)
    self.qkv = nnx.Linear(dim, 3 * dim, use_bias=False, rngs=rngs)
    self.out = nnx.Linear(dim, dim, use_bias=False, rngs=rngs)
    self.mlp_norm = nnx.RMSNorm(dim, epsilon=config.norm_eps, rngs=rngs)
    self.up = nnx.Linear(dim, config.mlp_ratio * dim, use_bias=False, rngs=rngs)
    self.down = nnx.Linear(config.mlp_ratio * dim, dim, use_bias=False, rngs=rngs)

  def __call__(self, x, positions, cache=None, start=0):
    c = self.config
    b, t, _ = x.shape
    q, k, v = jnp.split(self.qkv(self.attn_norm(x)), 3, axis=-1)
    q, k, v = (y.reshape(b, t, c.heads, c.head_dim) for y in (q, k, v))
    q, k = rope(q, positions, c.rope_base), rope(k, positions, c.rope_base)
    if cache is None:
      mask = positions[:, None] >= positions[None, :]
    else:
      keys, values = cache
      k = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype), (0, start, 0, 0))
      v = jax.lax.dynamic_update_slice(values, v.astype(values.dtype), (0, start, 0, 0))
      cache = (k, v)
      mask = positions[:, None] >= jnp.arange(k.shape[1])[None, :]
    attended = jax.nn.dot_product_attention(q, k, v, mask=mask[None, None])
    x = x + self.out(attended.reshape(b, t, c.dim))
    x = x + self.down(jax.nn.gelu(self.up(self.mlp_norm(x))))
    return x, cache


class Decoder(nnx.Module):
  """The LM: token ids ``(batch, time)`` -> logits ``(batch, time, vocab_size)``."""

  def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embed = nnx.Embed(config.vocab_size, config.dim, rngs=rngs)
    self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.layers)])
    self.norm = nnx.RMSNorm(config.dim, epsilon=config.norm_eps, rngs=rngs)

  def __call__(self, ids: jax.Array, cache=None, start=0):
    """Logits of ``ids`` placed at positions ``start, start + 1, ...``, and the updated cache."""
    positions = start + jnp.arange(ids.shape[1])
    x = self.embed(ids)
    new_cache = []
    for i, block in enumerate(self.blocks):
      x, layer_cache = block(x, positions, None if cache is None else cache[i], start)
      new_cache.append(layer_cache)
    logits = self.embed.attend(self.norm(x))
    return logits, (None if cache is None else new_cache)

  def init_cache(self, batch: int, dtype=jnp.float32):
    """Empty keys and values for ``batch`` sequences of up to ``config.max_len`` tokens."""
    c = self.config
    shape = (batch, c.max_len, c.heads, c.head_dim)
    return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(c.layers)]


@functools.partial(nnx.jit, static_argnames="steps")
def greedy_generate(model: Decoder, prompt: jax.Array, steps: int) -> jax.Array:
  """The ``steps`` tokens that greedy decoding appends to ``prompt`` ``(batch, length)``.

  The prompt fills the cache in one pass; then each step feeds the last token at its position.
  The prompts of a batch have one length (no padding); ``length + steps <= max_len``.
  """
  batch, length = prompt.shape
  if length + steps > model.config.max_len:
    raise ValueError(f"{length} + {steps} tokens exceed max_len {model.config.max_len}.")
  logits, cache = model(prompt, model.init_cache(batch), 0)
  token = jnp.argmax(logits[:, -1], axis=-1)

  def step(carry, position):
    token, cache = carry
    logits, cache = model(token[:, None], cache, position)
    return (jnp.argmax(logits[:, -1], axis=-1), cache), token

  positions = length + jnp.arange(steps)
  _, tokens = jax.lax.scan(step, (token, cache), positions)
  return tokens.T
