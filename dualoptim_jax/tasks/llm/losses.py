"""Causal-LM losses over batches ``{"input_ids", "labels"}`` whose labels are ``IGNORE`` where
no loss counts (the question, the padding)."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dualoptim_jax.data.tofu import IGNORE


def token_nll(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-position NLL of the next token and the mask of counted positions, ``(batch, time - 1)``.

  Position ``t`` predicts ``labels[t + 1]`` (the shift of Hugging Face's causal-LM loss).
  """
  targets = labels[:, 1:]
  counted = targets != IGNORE
  nll = optax.softmax_cross_entropy_with_integer_labels(
    logits[:, :-1].astype(jnp.float32), jnp.where(counted, targets, 0)
  )
  return jnp.where(counted, nll, 0.0), counted


def mean_token_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The mean NLL over every counted token of the batch (Hugging Face's causal-LM loss)."""
  nll, counted = token_nll(logits, labels)
  return nll.sum() / jnp.maximum(counted.sum(), 1)


def lm_loss(graphdef: nnx.GraphDef):
  """The core ``loss_fn`` of next-token prediction (`mean_token_nll`) for a decoder LM."""

  def loss_fn(params, model_state, batch, rng, extras):
    del rng, extras
    logits, _ = nnx.merge(graphdef, params, model_state)(batch["input_ids"])
    return mean_token_nll(logits, batch["labels"]), (model_state, {})

  return loss_fn
