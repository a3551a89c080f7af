"""Gradient masks, 0/1 trees like the params: SalUn's saliency mask and SFRon's Fisher ratio."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dualoptim_jax.core import TrainState
from dualoptim_jax.data import ArrayDataset, epoch_batches
from dualoptim_jax.models import apply
from dualoptim_jax.tasks.classification import losses


def _eval_grad_fn(graphdef: nnx.GraphDef, logits_loss: Callable) -> Callable:
  """Jitted ``grad(params, batch_stats, images, labels)`` of an eval-mode loss."""

  @jax.jit
  def grad(params, batch_stats, images, labels):
    def f(params):
      logits, _ = apply(graphdef, params, batch_stats, images, train=False)
      return logits_loss(logits, labels, None)

    return jax.grad(f)(params)

  return grad


def _mean_over_batches(
  grad_fn: Callable,
  state: TrainState,
  data: ArrayDataset,
  batch_size: int,
  rng: np.random.Generator,
  augment: bool,
  transform: Callable,
):
  """(1 / #batches) sum over one epoch of transform(grad of the batch-mean loss)."""
  total, count = None, 0
  for images, labels in epoch_batches(data, batch_size, rng, augment=augment):
    g = jax.tree.map(transform, grad_fn(state.params, state.model_state, images, labels))
    total = g if total is None else jax.tree.map(jnp.add, total, g)
    count += 1
  return jax.tree.map(lambda x: x / count, total)


def salun_mask(
  graphdef: nnx.GraphDef,
  state: TrainState,
  forget: ArrayDataset,
  retain: ArrayDataset,
  *,
  ratio: float = 0.5,
  batch_size: int = 128,
  augment: bool = False,
  seed: int = 0,
):
  r"""The reference's SalUn mask: 1 on the top ``ratio`` of all weights by saliency.

  With :math:`G_f, G_r` the means over batches of the eval-mode gradients of :math:`-\mathrm{CE}`
  on the forget and retain sets, the saliency is :math:`s = |G_f| - |G_r|` (the reference's
  variant; SalUn's paper uses :math:`|G_f|`), ranked globally over every scalar of every parameter.
  """
  if not 0.0 < ratio <= 1.0:
    raise ValueError(f"ratio must be in (0, 1], got {ratio}.")
  grad_fn = _eval_grad_fn(graphdef, losses.negative_cross_entropy)
  rng = np.random.default_rng(seed)
  g_f = _mean_over_batches(grad_fn, state, forget, batch_size, rng, augment, lambda g: g)
  g_r = _mean_over_batches(grad_fn, state, retain, batch_size, rng, augment, lambda g: g)
  saliency = jax.tree.map(lambda f, r: np.abs(np.asarray(f)) - np.abs(np.asarray(r)), g_f, g_r)
  flat = np.concatenate([s.ravel() for s in jax.tree.leaves(saliency)])
  keep = int(flat.size * ratio)
  order = np.argsort(-flat, kind="stable")
  chosen = np.zeros(flat.size, bool)
  chosen[order[:keep]] = True
  leaves, treedef = jax.tree.flatten(saliency)
  offsets = np.cumsum([0] + [leaf.size for leaf in leaves])
  return jax.tree.unflatten(
    treedef,
    [
      jnp.asarray(chosen[a:b].reshape(leaf.shape), jnp.float32)
      for leaf, a, b in zip(leaves, offsets[:-1], offsets[1:], strict=True)
    ],
  )


def fisher_mask(
  graphdef: nnx.GraphDef,
  state: TrainState,
  forget: ArrayDataset,
  retain: ArrayDataset,
  *,
  batch_size: int = 128,
  augment: bool = False,
  seed: int = 0,
  threshold: float = 1.0,
):
  r"""SFRon's Fisher-ratio mask: :math:`(F_f + 10^{-15}) / (F_r + 10^{-15}) \ge` ``threshold``.

  :math:`F` is the mean over batches of the squared eval-mode gradient of the batch-mean CE.
  """
  grad_fn = _eval_grad_fn(graphdef, losses.cross_entropy)
  rng = np.random.default_rng(seed)
  f_f = _mean_over_batches(grad_fn, state, forget, batch_size, rng, augment, jnp.square)
  f_r = _mean_over_batches(grad_fn, state, retain, batch_size, rng, augment, jnp.square)
  return jax.tree.map(
    lambda a, b: ((a + 1e-15) / (b + 1e-15) >= threshold).astype(jnp.float32), f_f, f_r
  )
