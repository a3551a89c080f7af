"""A decoder-only language model in Flax NNX, and a KV-cache greedy sampler.

The default block (the project's small LMs) is ``x + attn(norm(x))`` then ``x + mlp(norm(x))``
with RMSNorm, no biases, RoPE on every head dimension, a GELU MLP ``W2 gelu(W1 x)`` and logits
``norm(x) @ embedding^T`` (tied). The config also describes the Hugging Face families the loaders
read (``models/hf.py``): Llama-2 (SwiGLU MLP ``W2 (silu(Wg x) * W1 x)``, an untied head) and
Phi-1.5 (LayerNorm, biases, one norm feeding attention and MLP in parallel,
``x + attn(n) + mlp(n)``, RoPE on part of each head, a biased untied head). Attention is causal
through ``jax.nn.dot_product_attention``; parameters are float32 and ``dtype`` sets the compute
precision (bfloat16 at full scale).

With a cache (one ``(keys, values)`` pair per layer, each ``(batch, max_len, heads, head_dim)``),
a call at position ``start`` writes its keys and values there and attends to every cached position
up to its own, so decoding token by token gives the logits of a full forward pass. A ``valid``
mask of the keys hides padding: since RoPE scores depend only on the distance between positions,
a left-padded prompt gets the logits it gets unpadded.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """The architecture. ``dim`` must be a multiple of ``heads``, and the rotary part of a head even.

  Attributes:
    mlp_dim: the MLP's hidden width (None: ``mlp_ratio * dim``).
    norm: ``"rms"`` (RMSNorm) or ``"layer"`` (LayerNorm with a bias).
    mlp: ``"gelu"`` (tanh approximation) or ``"swiglu"``.
    bias: whether every linear layer, the head included, has a bias.
    parallel: attention and MLP read one norm of the same input (Phi).
    rotary_dim: how many leading dimensions of a head RoPE rotates (None: all).
    tie_embeddings: the logits use the embedding matrix, else a ``head`` layer.
    dtype: the compute dtype (parameters stay float32).
  """

  vocab_size: int
  dim: int = 128
  layers: int = 4
  heads: int = 4
  mlp_ratio: int = 4
  max_len: int = 256
  rope_base: float = 10_000.0
  norm_eps: float = 1e-6
  mlp_dim: int | None = None
  norm: str = "rms"
  mlp: str = "gelu"
  bias: bool = False
  parallel: bool = False
  rotary_dim: int | None = None
  tie_embeddings: bool = True
  dtype: str = "float32"

  def __post_init__(self):
    for name in ("vocab_size", "dim", "layers", "heads", "mlp_ratio", "max_len", "hidden_dim"):
      if getattr(self, name) < 1:
        raise ValueError(f"DecoderConfig.{name} must be positive, got {getattr(self, name)}.")
    if self.dim % self.heads or self.rotary % 2 or not 0 < self.rotary <= self.dim // self.heads:
      raise ValueError(
        f"dim {self.dim} must split into {self.heads} heads whose rotary part "
        f"({self.rotary}) has an even size."
      )
    if self.norm not in ("rms", "layer") or self.mlp not in ("gelu", "swiglu"):
      raise ValueError(f"Unknown norm {self.norm!r} or MLP {self.mlp!r}.")

  @property
  def head_dim(self) -> int:
    return self.dim // self.heads

  @property
  def rotary(self) -> int:
    return self.head_dim if self.rotary_dim is None else self.rotary_dim

  @property
  def hidden_dim(self) -> int:
    return self.mlp_ratio * self.dim if self.mlp_dim is None else self.mlp_dim


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


def _norm(config: DecoderConfig, rngs: nnx.Rngs) -> nnx.Module:
  kind = nnx.RMSNorm if config.norm == "rms" else nnx.LayerNorm
  return kind(config.dim, epsilon=config.norm_eps, dtype=config.dtype, rngs=rngs)


def _linear(config: DecoderConfig, d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(d_in, d_out, use_bias=config.bias, dtype=config.dtype, rngs=rngs)


def _partial_rope(x, positions, config: DecoderConfig):
  """RoPE on the first ``config.rotary`` dimensions of each head, the rest passed through."""
  r = config.rotary
  rotated = rope(x[..., :r], positions, config.rope_base)
  return rotated if r == x.shape[-1] else jnp.concatenate([rotated, x[..., r:]], axis=-1)


class Block(nnx.Module):
  """Pre-norm attention and MLP with residuals (in sequence, or in parallel for Phi)."""

  def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
    self.config = config
    dim, hidden = config.dim, config.hidden_dim
    self.attn_norm = _norm(config, rngs)
    self.qkv = _linear(config, dim, 3 * dim, rngs)
    self.out = _linear(config, dim, dim, rngs)
    if not config.parallel:
      self.mlp_norm = _norm(config, rngs)
    if config.mlp == "swiglu":
      self.gate = _linear(config, dim, hidden, rngs)
    self.up = _linear(config, dim, hidden, rngs)
    self.down = _linear(config, hidden, dim, rngs)

  def _mlp(self, x):
    if self.config.mlp == "swiglu":
      return self.down(jax.nn.silu(self.gate(x)) * self.up(x))
    return self.down(jax.nn.gelu(self.up(x)))

  def __call__(self, x, positions, cache=None, start=0, valid=None):
    c = self.config
    b, t, _ = x.shape
    normed = self.attn_norm(x)
    q, k, v = jnp.split(self.qkv(normed), 3, axis=-1)
    q, k, v = (y.reshape(b, t, c.heads, c.head_dim) for y in (q, k, v))
    q, k = _partial_rope(q, positions, c), _partial_rope(k, positions, c)
    if cache is None:
      mask = positions[:, None] >= positions[None, :]
    else:
      keys, values = cache
      k = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype), (0, start, 0, 0))
      v = jax.lax.dynamic_update_slice(values, v.astype(values.dtype), (0, start, 0, 0))
      cache = (k, v)
      mask = positions[:, None] >= jnp.arange(k.shape[1])[None, :]
    mask = mask[None, None] if valid is None else mask[None, None] & valid[:, None, None, :]
    attended = self.out(jax.nn.dot_product_attention(q, k, v, mask=mask).reshape(b, t, c.dim))
    if c.parallel:
      return x + attended + self._mlp(normed), cache
    x = x + attended
    return x + self._mlp(self.mlp_norm(x)), cache


class Decoder(nnx.Module):
  """The LM: token ids ``(batch, time)`` -> logits ``(batch, time, vocab_size)``."""

  def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embed = nnx.Embed(config.vocab_size, config.dim, dtype=config.dtype, rngs=rngs)
    self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.layers)])
    self.norm = _norm(config, rngs)
    if not config.tie_embeddings:
      self.head = _linear(config, config.dim, config.vocab_size, rngs)

  def __call__(self, ids: jax.Array, cache=None, start=0, valid=None):
    """Logits of ``ids`` placed at positions ``start, start + 1, ...``, and the updated cache.

    ``valid`` ``(batch, keys)`` (keys: ``ids``' length, or ``max_len`` with a cache) marks the
    positions that may be attended to; None: all.
    """
    positions = start + jnp.arange(ids.shape[1])
    x = self.embed(ids)
    new_cache = []
    for i, block in enumerate(self.blocks):
      x, layer_cache = block(x, positions, None if cache is None else cache[i], start, valid)
      new_cache.append(layer_cache)
    x = self.norm(x)
    logits = self.embed.attend(x) if self.config.tie_embeddings else self.head(x)
    return logits, (None if cache is None else new_cache)

  def init_cache(self, batch: int, length: int | None = None):
    """Empty keys and values for ``batch`` sequences of up to ``length`` (default
    ``config.max_len``) tokens."""
    c = self.config
    shape = (batch, c.max_len if length is None else length, c.heads, c.head_dim)
    return [(jnp.zeros(shape, c.dtype), jnp.zeros(shape, c.dtype)) for _ in range(c.layers)]


@functools.partial(nnx.jit, static_argnames="steps")
def greedy_generate(
  model: Decoder, prompt: jax.Array, steps: int, prompt_mask: jax.Array | None = None
) -> jax.Array:
  """The ``steps`` tokens that greedy decoding appends to ``prompt`` ``(batch, length)``.

  The prompt fills the cache in one pass; then each step feeds the last token at its position.
  Prompts of different lengths are left-padded, ``prompt_mask`` (``(batch, length)``, bool) being
  False on the padding; ``length + steps <= max_len``.
  """
  batch, length = prompt.shape
  if length + steps > model.config.max_len:
    raise ValueError(f"{length} + {steps} tokens exceed max_len {model.config.max_len}.")
  valid = jnp.ones((batch, length + steps), bool)  # the cache holds just what decoding needs
  if prompt_mask is not None:
    valid = valid.at[:, :length].set(prompt_mask.astype(bool))
  logits, cache = model(prompt, model.init_cache(batch, length + steps), 0, valid)
  token = jnp.argmax(logits[:, -1], axis=-1)

  def step(carry, position):
    token, cache = carry
    logits, cache = model(token[:, None], cache, position, valid)
    return (jnp.argmax(logits[:, -1], axis=-1), cache), token

  positions = length + jnp.arange(steps)
  _, tokens = jax.lax.scan(step, (token, cache), positions)
  return tokens.T
