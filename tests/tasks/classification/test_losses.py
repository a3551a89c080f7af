import jax
import jax.numpy as jnp
import numpy as np

from dualoptim_jax.tasks.classification import losses

LOGITS = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
TEACHER = jnp.array([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
LABELS = jnp.array([0, 2])


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_cross_entropy_and_ga():
  # Row 1: -log(e^2 / (e^2 + 1 + e^-1)); row 2: -log(1 / (2 e^0.5 + 1)).
  ce = [np.log(np.e**2 + 1 + np.e**-1) - 2.0, np.log(2 * np.e**0.5 + 1)]
  np.testing.assert_allclose(losses.cross_entropy(LOGITS, LABELS), np.mean(ce), rtol=1e-6)
  np.testing.assert_allclose(losses.negative_cross_entropy(LOGITS, LABELS), -np.mean(ce), rtol=1e-6)


def test_scrub_losses_use_kl_teacher_student_batchmean():
  log_s, log_t = np_log_softmax(LOGITS), np_log_softmax(TEACHER)
  kl = np.sum(np.exp(log_t) * (log_t - log_s)) / 2
  ce = -np.mean(log_s[[0, 1], [0, 2]])
  np.testing.assert_allclose(losses.scrub_forget(LOGITS, LABELS, TEACHER), -kl, rtol=1e-6)
  np.testing.assert_allclose(losses.scrub_retain(LOGITS, LABELS, TEACHER), ce + 0.5 * kl, rtol=1e-6)
  np.testing.assert_allclose(
    losses.scrub_retain(LOGITS, LABELS, TEACHER, gamma=2.0, alpha=0.0), 2 * ce, rtol=1e-6
  )
  assert float(losses.kl_teacher_student(TEACHER, TEACHER)) == 0.0


def test_sfron_forget_weights_low_loss_samples_more_and_detaches_them():
  log_s = np_log_softmax(LOGITS)
  ell = -log_s[[0, 1], [0, 2]]
  w = ell**-0.5 / np.sum(ell**-0.5)
  np.testing.assert_allclose(
    losses.sfron_forget(LOGITS, LABELS, alpha=3.0), -3.0 * np.sum(w * ell), rtol=1e-6
  )
  assert w[0] > w[1] and ell[0] < ell[1]
  # Gradient: the weights are constants, so d/dz = -alpha * sum_i w_i dl_i/dz.
  grad = jax.grad(lambda z: losses.sfron_forget(z, LABELS, alpha=3.0))(LOGITS)
  probs = np.exp(log_s)
  onehot = np.eye(3)[[0, 2]]
  np.testing.assert_allclose(grad, -3.0 * w[:, None] * (probs - onehot), rtol=1e-5)
