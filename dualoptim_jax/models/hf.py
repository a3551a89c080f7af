"""Hugging Face Llama and Phi checkpoints (``config.json`` and ``*.safetensors`` in a folder the
user gives; nothing is downloaded) as `Decoder` models with float32 weights.

Names map as below (``i`` a layer; torch ``Linear`` weights ``(out, in)`` are transposed into
``kernel`` ``(in, out)``; the query, key and value projections are concatenated into ``qkv``):

| Decoder | Llama (``model_type`` llama) | Phi (``model_type`` phi) |
| --- | --- | --- |
| ``embed.embedding`` | ``model.embed_tokens.weight`` | ``model.embed_tokens.weight`` |
| ``blocks.i.attn_norm`` | ``model.layers.i.input_layernorm`` | ``model.layers.i.input_layernorm`` |
| ``blocks.i.qkv`` | ``...self_attn.{q,k,v}_proj`` | ``...self_attn.{q,k,v}_proj`` |
| ``blocks.i.out`` | ``...self_attn.o_proj`` | ``...self_attn.dense`` |
| ``blocks.i.mlp_norm`` | ``...post_attention_layernorm`` | (none: parallel block) |
| ``blocks.i.gate`` | ``...mlp.gate_proj`` | (none: GELU MLP) |
| ``blocks.i.up``, ``down`` | ``...mlp.up_proj``, ``down_proj`` | ``...mlp.fc1``, ``fc2`` |
| ``norm`` | ``model.norm`` | ``model.final_layernorm`` |
| ``head`` | ``lm_head`` | ``lm_head`` |
"""

import json
import pathlib

import jax.numpy as jnp
from flax import nnx, traverse_util
from safetensors import safe_open

from dualoptim_jax.models.decoder import Decoder, DecoderConfig


def decoder_config(hf: dict, *, dtype: str = "float32", max_len: int | None = None):
  """The `DecoderConfig` of a Hugging Face ``config.json`` dict (Llama or Phi)."""
  kind = hf.get("model_type")
  heads = hf["num_attention_heads"]
  rope = {**(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}  # old or new key
  rope_theta = hf.get("rope_theta", rope.get("rope_theta", 10_000.0))
  rotary_factor = hf.get("partial_rotary_factor", rope.get("partial_rotary_factor", 0.5))
  common = dict(
    vocab_size=hf["vocab_size"],
    dim=hf["hidden_size"],
    layers=hf["num_hidden_layers"],
    heads=heads,
    mlp_dim=hf["intermediate_size"],
    max_len=max_len or hf["max_position_embeddings"],
    rope_base=float(rope_theta),
    tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    dtype=dtype,
  )
  if rope.get("rope_type", rope.get("type", "default")) != "default":
    raise ValueError(f"RoPE scaling {rope} is not supported.")
  if kind == "llama":
    if hf.get("num_key_value_heads", heads) != heads:
      raise ValueError("Grouped-query attention (num_key_value_heads != heads) is not supported.")
    if hf.get("hidden_act", "silu") != "silu" or hf.get("attention_bias") or hf.get("mlp_bias"):
      raise ValueError("Only Llama with a SiLU MLP and no biases is supported.")
    return DecoderConfig(**common, norm_eps=hf["rms_norm_eps"], norm="rms", mlp="swiglu")
  if kind == "phi":
    if hf.get("hidden_act", "gelu_new") != "gelu_new" or hf.get("qk_layernorm"):
      raise ValueError("Only Phi with a gelu_new MLP and no q/k layer norms is supported.")
    head_dim = hf["hidden_size"] // heads
    return DecoderConfig(
      **common,
      norm_eps=hf["layer_norm_eps"],
      norm="layer",
      mlp="gelu",
      bias=True,
      parallel=True,
      rotary_dim=int(rotary_factor * head_dim),
    )
  raise ValueError(
    f"Unsupported model_type {kind!r}: Llama ('llama') and Phi ('phi', the Hugging Face layout; "
    "convert older 'phi-msft' checkpoints with transformers' conversion script)."
  )


def _names(kind: str, i: int) -> dict[str, str]:
  """Decoder module -> Hugging Face module name, for layer ``i``."""
  layer = f"model.layers.{i}."
  if kind == "llama":
    return {
      "attn_norm": layer + "input_layernorm",
      "out": layer + "self_attn.o_proj",
      "mlp_norm": layer + "post_attention_layernorm",
      "gate": layer + "mlp.gate_proj",
      "up": layer + "mlp.up_proj",
      "down": layer + "mlp.down_proj",
    }
  return {
    "attn_norm": layer + "input_layernorm",
    "out": layer + "self_attn.dense",
    "up": layer + "mlp.fc1",
    "down": layer + "mlp.fc2",
  }


def load_hf_decoder(path, *, dtype: str = "float32", max_len: int | None = None) -> Decoder:
  """The Llama or Phi model in folder ``path`` as a `Decoder` (float32 parameters).

  ``dtype`` is the compute dtype (e.g. ``"bfloat16"``); ``max_len`` bounds the KV cache (default
  the checkpoint's ``max_position_embeddings``). Missing files or tensors, and tensors of the
  wrong shape, raise an error naming them.
  """
  path = pathlib.Path(path)
  if not (path / "config.json").is_file():
    raise FileNotFoundError(f"{path}: no config.json; expected a Hugging Face model folder.")
  hf = json.loads((path / "config.json").read_text())
  config = decoder_config(hf, dtype=dtype, max_len=max_len)
  files = sorted(path.glob("*.safetensors"))
  if not files:
    raise FileNotFoundError(f"{path}: no *.safetensors files.")
  handles = [safe_open(str(f), framework="flax") for f in files]
  where = {name: h for h in handles for name in h.keys()}

  def tensor(name):
    if name not in where:
      raise ValueError(f"{path}: the checkpoint has no tensor {name!r}.")
    return where[name].get_tensor(name).astype(jnp.float32)

  def linear(prefix, bias):
    params = {"kernel": tensor(prefix + ".weight").T}
    return {**params, "bias": tensor(prefix + ".bias")} if bias else params

  def norm(prefix):
    params = {"scale": tensor(prefix + ".weight")}
    return {**params, "bias": tensor(prefix + ".bias")} if config.norm == "layer" else params

  kind = hf["model_type"]
  pure = {"embed": {"embedding": tensor("model.embed_tokens.weight")}, "blocks": {}}
  for i in range(config.layers):
    names = _names(kind, i)
    qkv = [f"model.layers.{i}.self_attn.{x}_proj" for x in "qkv"]
    block = {
      "qkv": {"kernel": jnp.concatenate([tensor(n + ".weight") for n in qkv], axis=0).T},
      "attn_norm": norm(names["attn_norm"]),
    }
    if config.bias:
      block["qkv"]["bias"] = jnp.concatenate([tensor(n + ".bias") for n in qkv])
    for module in ("out", "gate", "up", "down"):
      if module in names:
        block[module] = linear(names[module], config.bias)
    if "mlp_norm" in names:
      block["mlp_norm"] = norm(names["mlp_norm"])
    pure["blocks"][i] = block
  pure["norm"] = norm("model.norm" if kind == "llama" else "model.final_layernorm")
  if not config.tie_embeddings:
    pure["head"] = linear("lm_head", config.bias)

  model = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  loaded = traverse_util.flatten_dict(pure)
  for key, want in traverse_util.flatten_dict(nnx.to_pure_dict(state)).items():
    got = loaded.get(key)
    if got is None or got.shape != want.shape:
      name = ".".join(map(str, key))
      raise ValueError(
        f"{path}: parameter {name} should be {want.shape}, got {getattr(got, 'shape', None)}."
      )
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)
