"""The Llama and Phi loaders against Hugging Face ``transformers``: the logits of tiny random
checkpoints (made by ``hf_fixtures/make_fixtures.py`` with PyTorch) within 1e-4."""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from dualoptim_jax.models.decoder import greedy_generate
from dualoptim_jax.models.hf import decoder_config, load_hf_decoder

FIXTURES = pathlib.Path(__file__).parent / "hf_fixtures"


@pytest.mark.parametrize("family", ["llama", "phi"])
def test_logits_match_the_pytorch_model(family):
  expected = np.load(FIXTURES / family / "expected.npz")
  model = load_hf_decoder(FIXTURES / family)
  logits, _ = model(expected["ids"])
  np.testing.assert_allclose(logits, expected["logits"], atol=1e-4, rtol=1e-4)
  # The cache path agrees with the full pass, so generation runs on the same logits.
  steps = np.asarray(greedy_generate(model, expected["ids"][:, :4], 3))
  np.testing.assert_array_equal(steps[:, 0], np.argmax(expected["logits"][:, 3], axis=-1))


def test_bfloat16_compute_keeps_float32_weights():
  expected = np.load(FIXTURES / "llama" / "expected.npz")
  model = load_hf_decoder(FIXTURES / "llama", dtype="bfloat16")
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {np.dtype("float32")}
  logits, _ = model(expected["ids"])
  assert logits.dtype == jnp.bfloat16
  error = np.abs(np.asarray(logits, np.float32) - expected["logits"]).max()
  assert 0 < error < 0.05  # rounded, yet the same function


def test_the_config_maps_each_family():
  llama = decoder_config(json.loads((FIXTURES / "llama" / "config.json").read_text()))
  assert (llama.norm, llama.mlp, llama.bias, llama.parallel, llama.rotary) == (
    "rms",
    "swiglu",
    False,
    False,
    8,
  )
  assert llama.rope_base == 500.0
  phi = decoder_config(json.loads((FIXTURES / "phi" / "config.json").read_text()))
  assert (phi.norm, phi.mlp, phi.bias, phi.parallel, phi.rotary) == ("layer", "gelu", True, True, 6)
  assert phi.rope_base == 300.0
  assert not phi.tie_embeddings and phi.hidden_dim == 80
  with pytest.raises(ValueError, match="Unsupported model_type 'gpt2'"):
    decoder_config(
      {**json.loads((FIXTURES / "phi" / "config.json").read_text()), "model_type": "gpt2"}
    )


def test_damaged_checkpoints_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    load_hf_decoder(tmp_path)
  shutil.copy(FIXTURES / "llama" / "config.json", tmp_path)
  with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
    load_hf_decoder(tmp_path)
  tensors = load_file(FIXTURES / "llama" / "model.safetensors")
  save_file(
    {k: v for k, v in tensors.items() if "layers.1.mlp.up_proj" not in k},
    tmp_path / "model.safetensors",
  )
  with pytest.raises(ValueError, match="no tensor 'model.layers.1.mlp.up_proj.weight'"):
    load_hf_decoder(tmp_path)
  tensors["model.norm.weight"] = tensors["model.norm.weight"][:-1]
  save_file(tensors, tmp_path / "model.safetensors")
  with pytest.raises(ValueError, match="parameter norm.scale should be \\(32,\\), got \\(31,\\)"):
    load_hf_decoder(tmp_path)
