"""Losses of the unlearning methods, as functions of logits ``loss(logits, labels, teacher_logits, **hp)``."""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels, teacher_logits=None):
  """Mean cross-entropy (FT, RL/SalUn with random labels, retain steps)."""
  del teacher_logits
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def negative_cross_entropy(logits, labels, teacher_logits=None):
  """Gradient ascent: -CE (GA forget steps; the SalUn saliency loss)."""
  return -cross_entropy(logits, labels)


def kl_teacher_student(logits, teacher_logits):
  r""":math:`\frac{1}{B}\sum_i \sum_c p^T_{ic} (\log p^T_{ic} - \log p^S_{ic})` (``kl_div`` batchmean)."""
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
