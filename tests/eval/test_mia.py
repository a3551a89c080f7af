"""Membership-inference scores and metrics on constructed cases with known answers."""

import numpy as np
import pytest
import scipy.stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from dualoptim_jax.eval import mia


def naive_scores(logits, label):
  """The score formulas written out for one sample, in plain float64."""
  p = np.exp(logits) / np.exp(logits).sum()
  others = [c for c in range(len(p)) if c != label]
  mentr = -(1 - p[label]) * np.log(p[label]) - sum(p[c] * np.log(1 - p[c]) for c in others)
  return {
    "loss": np.log(p[label]),
    "confidence": p[label],
    "entropy": np.sum(p * np.log(p)),
    "modified_entropy": -mentr,
    "logit_confidence": np.log(p[label] / (1 - p[label])),
  }


def test_scores_follow_their_formulas():
  logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [0.0, 0.0, 0.0]])
  labels = np.array([0, 1, 2])
  scores = mia.membership_scores(logits, labels)
  assert set(scores) == set(mia.SCORES)
  for i in range(3):
    for name, value in naive_scores(logits[i], labels[i]).items():
      np.testing.assert_allclose(scores[name][i], value, rtol=1e-12)
  # Uniform logits: p_y = 1/3, entropy log 3, logit-scaled confidence log(1/2).
  np.testing.assert_allclose(scores["entropy"][2], -np.log(3))
  np.testing.assert_allclose(scores["logit_confidence"][2], np.log(0.5))


def test_scores_stay_exact_where_probabilities_saturate():
  # p_y = 1 - 2e-22 in float64 is 1: the naive log(p / (1 - p)) would be inf.
  scores = mia.membership_scores(np.array([[50.0, 0.0, 0.0], [50.0, 0.0, 0.0]]), np.array([0, 1]))
  np.testing.assert_allclose(scores["logit_confidence"], [50 - np.log(2), -50.0], rtol=1e-12)
  np.testing.assert_allclose(scores["loss"][1], -50.0, rtol=1e-12)
  # Modified entropy: ~0 for the confident right answer; for the confident wrong one,
  # -log p_y = 50 plus -p_0 log(1 - p_0) = -log(2 e^-50) = 50 - log 2 from the wrong class.
  assert -1e-18 < -scores["modified_entropy"][0] < 1e-18
  np.testing.assert_allclose(scores["modified_entropy"][1], -(100 - np.log(2)), rtol=1e-9)
  assert all(np.isfinite(v).all() for v in scores.values())


def test_a_more_confident_right_answer_scores_higher_everywhere():
  scores = mia.membership_scores(np.array([[1.0, 0.0, 0.0], [4.0, 0.0, 0.0]]), np.array([0, 0]))
  for name, values in scores.items():
    assert values[1] > values[0], name


def test_roc_on_a_hand_computed_case():
  members, nonmembers = [3.0, 1.0], [2.0, 0.0]
  fpr, tpr, thresholds = mia.roc_curve(members, nonmembers)
  np.testing.assert_array_equal(thresholds, [np.inf, 3, 2, 1, 0])
  np.testing.assert_array_equal(tpr, [0, 0.5, 0.5, 1, 1])
  np.testing.assert_array_equal(fpr, [0, 0, 0.5, 0.5, 1])
  assert mia.roc_auc(members, nonmembers) == 0.75  # 3 of the 4 pairs ordered
  assert mia.roc_auc([1.0], [1.0]) == 0.5  # a tie counts half
  threshold, accuracy = mia.best_threshold(members, nonmembers)
  assert (threshold, accuracy) == (1.0, 0.75)  # TPR 1, TNR 1/2 (the lowest of the ties)
  assert mia.balanced_accuracy(members, nonmembers, 3.0) == 0.75  # TPR 1/2, TNR 1


def test_auc_agrees_with_sklearn_and_the_extremes():
  rng = np.random.default_rng(0)
  members, nonmembers = rng.normal(0.5, 1, 300).round(1), rng.normal(0, 1, 500).round(1)  # ties
  labels = np.r_[np.ones(300), np.zeros(500)]
  expected = roc_auc_score(labels, np.r_[members, nonmembers])
  assert mia.roc_auc(members, nonmembers) == pytest.approx(expected, abs=1e-12)
  assert mia.roc_auc(members + 100, nonmembers) == 1.0
  assert mia.roc_auc(members - 100, nonmembers) == 0.0
  assert mia.roc_auc(nonmembers, nonmembers) == 0.5  # one distribution


def test_low_error_rates_and_their_resolution():
  rng = np.random.default_rng(1)
  same = rng.normal(size=20_000)
  members, nonmembers = same[:10_000], same[10_000:]
  # One distribution: at FPR <= a, the TPR is about a.
  assert mia.tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(0.01, abs=0.004)
  assert mia.tpr_at_fpr(members, nonmembers, 0.001) == pytest.approx(0.001, abs=0.001)
  # Separable: every member at FPR 0, every non-member at FNR 0.
  assert mia.tpr_at_fpr(members + 100, nonmembers, 0.001) == 1.0
  assert mia.tnr_at_fnr(members + 100, nonmembers, 0.001) == 1.0
  # Too few non-members (members) to resolve a rate: 0.01 x 500 = 5 < 10.
  assert mia.tpr_at_fpr(members, nonmembers[:500], 0.01) is None
  assert mia.tpr_at_fpr(members, nonmembers[:1000], 0.01) is not None  # exactly 10
  assert mia.tnr_at_fnr(members[:500], nonmembers, 0.01) is None


def test_tnr_at_fnr_mirrors_tpr_at_fpr():
  # Members [0, 1, ..., 99]; non-members [-50, ..., 49]: at FNR <= 0.1 the threshold is 10, which
  # leaves 60 of the 100 non-members below it.
  members, nonmembers = np.arange(100.0), np.arange(100.0) - 50
  assert mia.tnr_at_fnr(members, nonmembers, 0.1) == 0.6
  # At FPR <= 0.1 the threshold is 40: members 40..99 are called members.
  assert mia.tpr_at_fpr(members, nonmembers, 0.1) == 0.6


def test_unlearning_attacks_tell_a_remembered_forget_set_from_a_forgotten_one():
  rng = np.random.default_rng(2)
  retain = {"loss": rng.normal(2, 1, 4000)}  # members score high
  test = {"loss": rng.normal(0, 1, 2000)}
  remembered = mia.unlearning_attacks({"loss": rng.normal(2, 1, 1000)}, retain, test)["loss"]
  forgotten = mia.unlearning_attacks({"loss": rng.normal(0, 1, 1000)}, retain, test)["loss"]
  assert remembered["auc"] == pytest.approx(0.92, abs=0.02)  # Phi(2 / sqrt 2)
  assert forgotten["auc"] == pytest.approx(0.5, abs=0.03)
  # The retain-vs-test threshold (about 1, balanced accuracy Phi(1) = 0.84) calls most of a
  # remembered forget set members and few of a forgotten one.
  assert remembered["forget_member_rate"] == pytest.approx(0.84, abs=0.04)
  assert forgotten["forget_member_rate"] == pytest.approx(0.16, abs=0.04)
  assert remembered["transfer_balanced_accuracy"] == pytest.approx(0.84, abs=0.03)
  assert forgotten["transfer_balanced_accuracy"] == pytest.approx(0.5, abs=0.03)
  assert remembered["tpr@fpr=0.01"] is not None and remembered["tnr@fnr=0.01"] is not None
  assert forgotten["tpr@fpr=0.001"] is None  # 0.001 x 2000 test samples = 2 < 10
  assert forgotten["tnr@fnr=0.001"] is None  # 0.001 x 1000 forget samples = 1 < 10


def test_privleak_is_muses_and_its_sign_tells_under_from_over_unlearning():
  # MUSE orientation: 1 - AUC. Retrained 0.5 -> 0.5; a remembering model 0.75 -> 0.25.
  assert mia.privleak(0.75, 0.5) == pytest.approx(-50.0)  # under-unlearning
  assert mia.privleak(0.25, 0.5) == pytest.approx(50.0)  # over-unlearning
  assert mia.privleak(0.6, 0.6) == 0.0
  assert mia.privleak(1.0, 0.6) == pytest.approx(-100.0)  # the forget set fully exposed


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match="at least one member"):
    mia.roc_auc([], [1.0])
  with pytest.raises(ValueError, match="NaN"):
    mia.roc_auc([np.nan], [1.0])
  with pytest.raises(ValueError, match="logits of shape"):
    mia.membership_scores(np.zeros(3), np.zeros(3, int))
  with pytest.raises(ValueError, match="labels"):
    mia.membership_scores(np.zeros((3, 2)), np.zeros(2, int))


def test_lira_and_rmia_on_hand_computed_cases():
  # Sample 0: OUT scores (model 1, 2) -1 and 1 (mean 0; global std 1), the target scores 1.
  reference = np.array([[9.0, -1.0, 1.0], [3.0, 2.0, 9.0]])
  keep = np.array([[True, False, False], [False, False, True]])
  scores = mia.lira_offline(np.array([1.0, 2.5]), reference, keep)
  # Global std: deviations (-1, 1) about 0 and (0.5, -0.5) about 2.5: sqrt((1+1+.25+.25)/4).
  std = np.sqrt(2.5 / 4)
  np.testing.assert_allclose(np.exp(scores), [norm_cdf(1 / std), norm_cdf(0.0)], rtol=1e-12)
  # RMIA with a = 1 (p(x) = mean OUT confidence): sample 0's ratio 0.4 / 0.2 = 2 dominates the
  # population ratios 1 and 2 of [1, 2, 4].
  population_reference = np.full((3, 3), 0.25)
  got = mia.rmia(
    np.array([0.4]),
    np.array([[0.2, 0.2, 0.9]]),
    np.array([[False, False, True]]),
    np.array([0.25, 0.5, 1.0]),
    population_reference,
    a=1.0,
  )
  np.testing.assert_allclose(got, [2 / 3])
  with pytest.raises(ValueError, match="did not train on it"):
    mia.lira_offline(np.zeros(1), np.zeros((1, 2)), np.ones((1, 2), bool))


def norm_cdf(x):
  return scipy.stats.norm.cdf(x)


def test_reference_model_attacks_find_the_members_of_a_memorising_model():
  """Logistic regressions on 300-dimensional noise with random labels can only memorise: a model
  fits its training half and is at chance elsewhere. Eight reference models on random halves
  (their keep masks known) let LiRA and RMIA find the target's members; against a target that
  trained on none of the samples they find nothing."""
  rng = np.random.default_rng(0)
  n, d, classes, models = 300, 300, 4, 8
  x, y = rng.normal(size=(n + 200, d)), rng.integers(0, classes, n + 200)
  population = slice(n, n + 200)  # trained on by no model

  def fit(rows):
    model = LogisticRegression(C=10.0, max_iter=300).fit(x[rows], y[rows])
    logp = np.log(np.clip(model.predict_proba(x), 1e-300, None))
    return mia.membership_scores(logp, y)

  # Each sample in exactly half of the reference models (LiRA's keep masks).
  keep = np.stack([rng.permutation(models) < models // 2 for _ in range(n)])
  references = [fit(np.flatnonzero(keep[:, r])) for r in range(models)]
  members = rng.permutation(n) < n // 2
  for target, expect_members in ((fit(np.flatnonzero(members)), True), (fit(population), False)):
    lira = mia.lira_offline(
      target["logit_confidence"][:n],
      np.stack([r["logit_confidence"][:n] for r in references], axis=1),
      keep,
    )
    rmia = mia.rmia(
      target["confidence"][:n],
      np.stack([r["confidence"][:n] for r in references], axis=1),
      keep,
      target["confidence"][population],
      np.stack([r["confidence"][population] for r in references], axis=1),
    )
    for scores in (lira, rmia):
      auc = mia.roc_auc(scores[members], scores[~members])
      if expect_members:
        assert auc > 0.95
      else:
        assert abs(auc - 0.5) < 0.1
