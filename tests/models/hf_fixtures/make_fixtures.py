"""Writes the tiny random Llama and Phi checkpoints and their logits that ``test_hf.py`` reads.

Needs the ``dev`` extra (torch, transformers), never the tests themselves:

  pip install -e '.[dev]' && python tests/models/hf_fixtures/make_fixtures.py

Each folder gets ``config.json`` and ``model.safetensors`` (``save_pretrained``) and
``expected.npz``: token ids ``(2, 12)`` and the float32 logits of the PyTorch model on them.
"""

import pathlib

import numpy as np
import torch
import transformers

HERE = pathlib.Path(__file__).parent
COMMON = dict(
  vocab_size=97,
  hidden_size=32,
  intermediate_size=80,
  num_hidden_layers=2,
  num_attention_heads=4,
  max_position_embeddings=64,
  tie_word_embeddings=False,
)  # RoPE bases and the rotary share below differ from the defaults, so that reading them counts
MODELS = {
  "llama": (
    transformers.LlamaConfig,
    transformers.LlamaForCausalLM,
    dict(num_key_value_heads=4, rms_norm_eps=1e-5, rope_theta=500.0),
  ),
  "phi": (
    transformers.PhiConfig,
    transformers.PhiForCausalLM,
    dict(partial_rotary_factor=0.75, layer_norm_eps=1e-5, rope_theta=300.0),
  ),
}


def main():
  for name, (config_cls, model_cls, extra) in MODELS.items():
    torch.manual_seed(0)
    config = config_cls(**COMMON, **extra)
    config._attn_implementation = "eager"
    model = model_cls(config).eval()
    with torch.no_grad():  # biases and norms away from their init, so that a wrong map shows
      for parameter in model.parameters():
        parameter.add_(0.05 * torch.randn_like(parameter))
    folder = HERE / name
    model.save_pretrained(folder, safe_serialization=True)
    ids = torch.as_tensor(np.random.default_rng(0).integers(0, COMMON["vocab_size"], (2, 12)))
    with torch.no_grad():
      logits = model(input_ids=ids).logits.float().numpy()
    np.savez(folder / "expected.npz", ids=ids.numpy(), logits=logits)
    print(f"wrote {folder}: transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
  main()
