"""Tests for accuracies, entropy and the entropy MIA."""

import numpy as np
import pytest

from dualoptim_jax.tasks.classification.metrics import (
  accuracy,
  entropy,
  mia_efficacy,
  predict_logits,
  softmax,
  unlearning_metrics,
)

C = 10


def _confident(n):
  # Near one-hot: entropy ~1.3e-4 nats.
  p = np.full((n, C), 1e-6)
  p[:, 0] = 1 - (C - 1) * 1e-6
  return p


def _uniform(n):
  # Entropy log(10) ~ 2.30 nats.
  return np.full((n, C), 1.0 / C)


def test_accuracy():
  logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
  assert accuracy(logits, np.array([0, 1, 1, 1])) == 75.0


@pytest.mark.parametrize(
  "logits, labels, message",
  [
    (np.zeros((3, 2)), np.zeros(2), r"logits \(n, classes\)"),
    (np.zeros(3), np.zeros(3), r"logits \(n, classes\)"),
    (np.zeros((0, 2)), np.zeros(0), "empty"),
  ],
)
def test_accuracy_bad_input(logits, labels, message):
  with pytest.raises(ValueError, match=message):
    accuracy(logits, labels)


def test_predict_logits_drops_padding():
  # The "images" are the logits themselves; the last batch is padded with one row.
  batches = [
    (np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]), np.array([True, True])),
    (np.array([[5.0, 0.0], [9.0, 9.0]]), np.array([0, -1]), np.array([True, False])),
  ]
  logits, labels = predict_logits(lambda x: 2 * x, batches)
  np.testing.assert_array_equal(logits, [[2.0, 0.0], [0.0, 2.0], [10.0, 0.0]])
  np.testing.assert_array_equal(labels, [0, 0, 0])
  with pytest.raises(ValueError, match="rows"):
    predict_logits(lambda x: x[:1], batches)
  with pytest.raises(ValueError, match="No batches"):
    predict_logits(lambda x: x, [])


def test_softmax_is_stable():
  p = softmax(np.array([[1000.0, 0.0], [0.0, 0.0], [np.log(3.0), 0.0]], np.float32))
  assert p.dtype == np.float64
  np.testing.assert_allclose(p, [[1.0, 0.0], [0.5, 0.5], [0.75, 0.25]], atol=1e-12)


def test_entropy():
  h = entropy(np.array([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25] * 4]))
  np.testing.assert_allclose(h, [0.0, np.log(2), np.log(4)], atol=1e-15)  # 0 log 0 = 0
  assert h[0] == 0.0
  with pytest.raises(ValueError, match="non-negative probabilities"):
    entropy(np.array([[1.5, -0.5]]))


@pytest.mark.parametrize(
  "forget, expected",
  [
    (_confident(20), 100.0),  # looks like retain: all members
    (_uniform(20), 0.0),  # looks like test: no members
    (np.concatenate([_confident(10), _uniform(10)]), 50.0),
  ],
)
def test_mia_separable(forget, expected):
  # Retain and test are separated by entropy (1e-4 vs 2.3 nats), unequal in size
  # (the class weights balance them), so the decision threshold lies in between.
  assert mia_efficacy(_confident(40), forget, _uniform(60)) == expected


def test_mia_rejects_empty_sets():
  with pytest.raises(ValueError, match="non-empty"):
    mia_efficacy(_confident(4), _confident(0), _uniform(4))


def test_unlearning_metrics():
  eye = 5.0 * np.eye(C)[[0, 1, 2, 3]]  # predicts classes 0..3
  forget = (eye, np.array([0, 1, 2, 9]))  # 3 / 4 correct -> UA = 25
  retain = (eye, np.array([0, 1, 2, 3]))  # RA = 100
  test = (np.zeros((5, C)), np.array([0, 1, 2, 3, 4]))  # argmax is class 0 -> TA = 20
  metrics = unlearning_metrics(forget, retain, test)
  assert list(metrics) == ["UA", "RA", "TA", "MIA"]
  assert metrics["UA"] == 25.0 and metrics["RA"] == 100.0 and metrics["TA"] == 20.0
  # Forget has the retain entropy, test is uniform: every forget sample is a member.
  assert metrics["MIA"] == 100.0


def _two_class_with_entropy(h):
  """Rows (p, 1 - p) whose entropy is h nats (0 < h < log 2), found by bisection."""
  lo, hi = np.full(len(h), 1e-12), np.full(len(h), 0.5)
  for _ in range(100):
    mid = (lo + hi) / 2
    too_low = -(mid * np.log(mid) + (1 - mid) * np.log(1 - mid)) < h
    lo, hi = np.where(too_low, mid, lo), np.where(too_low, hi, mid)
  return np.stack([lo, 1 - lo], axis=1)


def test_mia_overlapping_classes_threshold_by_symmetry():
  # Retain (members) have low entropy, test high, with overlap (0.45 > 0.25). The feature sets are
  # mirror images around c = log(2) / 2 with equal sizes, so the fitted logistic regression (L2 on
  # the weight only) is symmetric too: its boundary is exactly c. Forget samples below c count
  # as members: 3 of 5.
  c = np.log(2) / 2
  retain = c - np.array([0.25, 0.2, 0.15, 0.1, -0.05, -0.02])
  test = 2 * c - retain
  forget = c + np.array([-0.2, -0.01, -0.3, 0.01, 0.2])
  got = mia_efficacy(*(_two_class_with_entropy(h) for h in (retain, forget, test)))
  assert got == pytest.approx(60.0)
  # Swapping the roles of retain and test flips every decision.
  flipped = mia_efficacy(*(_two_class_with_entropy(h) for h in (test, forget, retain)))
  assert flipped == pytest.approx(40.0)
