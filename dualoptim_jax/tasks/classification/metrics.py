"""Classification unlearning metrics: accuracies and the entropy membership-inference attack.

The metric functions run on the host in NumPy (float64) and take logits; `evaluate` computes
the logits of a model on a split.

* UA = 100 - top-1 accuracy on the forget set, RA / TA = top-1 accuracy on the
  retain / test set, all in percent.
* MIA (SFR-on version): a class-balanced logistic regression on the softmax
  entropy ``H(p) = -sum_c p_c log p_c`` is fit to tell retain (member, 1) from
  test (non-member, 0) samples; MIA is the percentage of forget samples it
  predicts to be members.

With ``attacks``, `evaluate` adds the membership-inference framework's view (`attack_report`):
every score of `eval.mia` in its transfer and audit threat models, and the ROC of the loss
attack, forget vs test.
"""

import functools
from collections.abc import Callable, Iterable

import jax
import numpy as np
from flax import nnx
from sklearn.linear_model import LogisticRegression

from dualoptim_jax.core import TrainState
from dualoptim_jax.data import UnlearningSplit, eval_batches
from dualoptim_jax.eval import Metric, mia
from dualoptim_jax.models import apply

# Every one is judged by its gap to the retrained model.
METRICS = (Metric("UA"), Metric("RA"), Metric("TA"), Metric("MIA"))


def _logits_labels(logits, labels) -> tuple[np.ndarray, np.ndarray]:
  logits, labels = np.asarray(logits), np.asarray(labels)
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(
      f"Expected logits (n, classes) and labels (n,), got shapes {logits.shape} and {labels.shape}."
    )
  if not len(labels):
    raise ValueError("Cannot evaluate an empty set.")
  return logits, labels


def accuracy(logits, labels) -> float:
  """Top-1 accuracy in percent."""
  logits, labels = _logits_labels(logits, labels)
  return float(100.0 * np.mean(np.argmax(logits, axis=-1) == labels))


def predict_logits(
  predict_fn: Callable[[np.ndarray], np.ndarray],
  batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
  """Concatenated ``(logits, labels)`` of the valid rows of padded batches.

  Args:
    predict_fn: maps a batch of images to logits ``(batch, classes)``.
    batches: ``(images, labels, valid_mask)`` tuples; rows whose mask is false
      are padding and are dropped.
  """
  all_logits, all_labels = [], []
  for images, labels, mask in batches:
    mask = np.asarray(mask, bool)
    logits = np.asarray(predict_fn(images))
    if logits.shape[:1] != mask.shape or np.shape(labels) != mask.shape:
      raise ValueError(
        f"Batch of {mask.shape} rows gave logits {logits.shape} and labels {np.shape(labels)}."
      )
    all_logits.append(logits[mask])
    all_labels.append(np.asarray(labels)[mask])
  if not all_logits:
    raise ValueError("No batches to predict.")
  return np.concatenate(all_logits), np.concatenate(all_labels)


def softmax(logits) -> np.ndarray:
  """Row-wise softmax in float64, shifted by the row maximum for stability."""
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(axis=-1, keepdims=True))
  return z / z.sum(axis=-1, keepdims=True)


def entropy(probs) -> np.ndarray:
  """``H(p) = -sum_c p_c log p_c`` per row, with ``0 log 0 = 0``."""
  p = np.asarray(probs, np.float64)
  if p.ndim != 2 or (p < 0).any():
    raise ValueError(f"Expected non-negative probabilities (n, classes), got shape {p.shape}.")
  logp = np.log(np.where(p > 0, p, 1.0))
  return -np.sum(p * logp, axis=-1)


def mia_efficacy(probs_retain, probs_forget, probs_test) -> float:
  """Percentage of forget samples an entropy attack predicts to be members.

  Fits ``LogisticRegression(class_weight="balanced", solver="lbfgs")`` on
  ``x = H(p)`` with ``y = 1`` for retain and ``y = 0`` for test samples, then
  returns ``100 * mean(predict(H(p_forget)))``.
  """
  h_retain, h_forget, h_test = (entropy(p) for p in (probs_retain, probs_forget, probs_test))
  if not (len(h_retain) and len(h_forget) and len(h_test)):
    raise ValueError("Retain, forget and test sets must all be non-empty.")
  x = np.concatenate([h_retain, h_test])[:, None]
  y = np.concatenate([np.ones(len(h_retain)), np.zeros(len(h_test))])
  clf = LogisticRegression(class_weight="balanced", solver="lbfgs").fit(x, y)
  return float(100.0 * np.mean(clf.predict(h_forget[:, None])))


def unlearning_metrics(forget, retain, test) -> dict[str, float]:
  """``{"UA", "RA", "TA", "MIA"}`` in percent.

  Args:
    forget: ``(logits, labels)`` on the forget set, e.g. from
      :func:`predict_logits`.
    retain: ``(logits, labels)`` on the retain set.
    test: ``(logits, labels)`` on the test set.
  """
  (f_logits, f_labels), (r_logits, r_labels), (t_logits, t_labels) = (
    _logits_labels(*s) for s in (forget, retain, test)
  )
  return {
    "UA": 100.0 - accuracy(f_logits, f_labels),
    "RA": accuracy(r_logits, r_labels),
    "TA": accuracy(t_logits, t_labels),
    "MIA": mia_efficacy(softmax(r_logits), softmax(f_logits), softmax(t_logits)),
  }


def attack_report(forget, retain, test) -> dict:
  """``{"attacks": ..., "roc_loss": ...}``: `eval.mia.unlearning_attacks` of every score, and the
  loss attack's TPR, forget vs test, at each FPR of `eval.mia.ROC_FPRS`.

  Args:
    forget, retain, test: ``(logits, labels)`` of each set.
  """
  forget, retain, test = (
    mia.membership_scores(*_logits_labels(*s)) for s in (forget, retain, test)
  )
  return {
    "attacks": mia.unlearning_attacks(forget, retain, test),
    "roc_loss": mia.roc_at(forget["loss"], test["loss"]),
  }


@functools.partial(jax.jit, static_argnums=0)
def predict(graphdef: nnx.GraphDef, params, batch_stats, images) -> jax.Array:
  """Eval-mode logits (running BatchNorm statistics)."""
  return apply(graphdef, params, batch_stats, images, train=False)[0]


def evaluate(
  graphdef: nnx.GraphDef,
  state: TrainState,
  split: UnlearningSplit,
  batch_size: int = 500,
  attacks: bool = False,
) -> dict:
  """`unlearning_metrics` of the model ``(graphdef, state)`` on ``split``; with ``attacks``, its
  `attack_report` too, under ``"mia"``, and under ``"scores"`` the logit-scaled confidence of
  every forget and test sample (float32 arrays, in set order) for the reference-model attacks."""

  def logits(dataset):
    return predict_logits(
      lambda x: predict(graphdef, state.params, state.model_state, x),
      eval_batches(dataset, batch_size),
    )

  sets = logits(split.forget), logits(split.retain), logits(split.test)
  metrics = unlearning_metrics(*sets)
  if not attacks:
    return metrics
  scores = {
    name: mia.membership_scores(*data)["logit_confidence"].astype(np.float32)
    for name, data in (("forget", sets[0]), ("test", sets[2]))
  }
  return {**metrics, "mia": attack_report(*sets), "scores": scores}
