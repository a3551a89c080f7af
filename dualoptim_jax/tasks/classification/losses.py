"""Losses of the classification unlearning methods, and the train-step loss over a classifier.

A logits loss is ``loss(logits, labels, teacher_logits, **hparams) -> scalar``;
`classifier_loss` turns one into the training core's ``loss_fn``.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dualoptim_jax.models import apply


def cross_entropy(logits, labels, teacher_logits=None):
  """Mean cross-entropy (FT, RL/SalUn with random labels, retain steps)."""
  del teacher_logits
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def negative_cross_entropy(logits, labels, teacher_logits=None):
  """Gradient ascent: -CE (GA forget steps; the SalUn saliency loss)."""
  return -cross_entropy(logits, labels)


def kl_teacher_student(logits, teacher_logits):
  r"""KL(teacher || student), ``kl_div`` batchmean:
  :math:`\frac{1}{B}\sum_i \sum_c p^T_{ic} (\log p^T_{ic} - \log p^S_{ic})`."""
  log_p_teacher = jax.nn.log_softmax(teacher_logits)
  log_p_student = jax.nn.log_softmax(logits)
  return jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student)) / logits.shape[0]


def scrub_forget(logits, labels, teacher_logits):
  """SCRUB max step: -KL(p_teacher || p_student)."""
  del labels
  return -kl_teacher_student(logits, teacher_logits)


def scrub_retain(logits, labels, teacher_logits, gamma=1.0, alpha=0.5):
  """SCRUB min step: gamma * CE + alpha * KL(p_teacher || p_student)."""
  return gamma * cross_entropy(logits, labels) + alpha * kl_teacher_student(logits, teacher_logits)


def sfron_forget(logits, labels, teacher_logits=None, alpha=1.0, lambd=0.5):
  r"""SFRon's weighted gradient ascent: :math:`-\alpha_t \sum_i w_i \ell_i`.

  :math:`w_i = \ell_i^{-\lambda} / \sum_j \ell_j^{-\lambda}` (detached; the reference adds 1e-15
  to the loss before the power), so still-remembered, low-loss samples weigh more.
  """
  del teacher_logits
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  weights = jax.lax.stop_gradient((losses + 1e-15) ** -lambd)
  weights = weights / jnp.sum(weights)
  return -alpha * jnp.sum(weights * losses)


def classifier_loss(graphdef: nnx.GraphDef, logits_loss):
  """The core ``loss_fn`` of a classifier trained on ``(images, labels)`` batches.

  The model runs in train mode (batch statistics; the running statistics it returns are the new
  model state), as the reference does in the forget and the retain phase alike. ``extras`` holds
  the traced hyper-parameters of ``logits_loss``, and under ``"teacher"`` the ``(params,
  batch_stats)`` of a frozen model whose train-mode logits the loss compares with (SCRUB).
  """

  def loss_fn(params, batch_stats, batch, rng, extras):
    del rng
    images, labels = batch
    hparams = dict(extras or {})
    teacher = hparams.pop("teacher", None)
    teacher_logits = None
    if teacher is not None:
      teacher_logits = jax.lax.stop_gradient(apply(graphdef, *teacher, images, train=True)[0])
    logits, batch_stats = apply(graphdef, params, batch_stats, images, train=True)
    return logits_loss(logits, labels, teacher_logits, **hparams), (batch_stats, {})

  return loss_fn
