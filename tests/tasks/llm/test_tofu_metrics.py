"""The TOFU scores on constructed cases with hand-computed values."""

import math

import numpy as np
import pytest

from dualoptim_jax.tasks.llm import metrics as M


def test_rouge_l_recall_counts_the_answer_covered_by_the_generation():
  # Answer "the cat sat on the mat" (6 words); "the cats are sitting" stems to the, cat, are, sit:
  # the longest common subsequence with the answer is "the cat", 2 of its 6 words.
  got = M.rouge_l_recall(
    ["the cats are sitting", "the cat sat on the mat", "dogs"], ["the cat sat on the mat"] * 3
  )
  np.testing.assert_allclose(got, [2 / 6, 1.0, 0.0])
  with pytest.raises(ValueError, match="2 generations for 1 answers"):
    M.rouge_l_recall(["a", "b"], ["a"])


def test_probabilities():
  np.testing.assert_allclose(M.answer_probability([0.0, math.log(2)]), [1.0, 0.5])
  # P_true = 1/2, perturbed 1/4 and 1/4: 0.5 / (0.5 + 0.5) = 0.5.
  got = M.relative_probability([math.log(2)], [[math.log(4), math.log(4)]])
  np.testing.assert_allclose(got, [0.5])


def test_truth_ratio_in_both_aggregations():
  # mean perturbed NLL - paraphrased NLL = log 2 and -log 2: R = 2 and 1/2.
  ratios = M.truth_ratios([1.0, 2.0], [[1.0 + math.log(2)] * 3, [2.0 - math.log(2)] * 3])
  np.testing.assert_allclose(ratios, [2.0, 0.5])
  assert M.truth_ratio_score(ratios, forget=True) == pytest.approx(1 - 0.5)  # min(R, 1/R) = 1/2
  # max(0, 1 - 1/R): 1 - 1/2 = 0.5 and max(0, 1 - 2) = 0: mean 0.25.
  assert M.truth_ratio_score(ratios, forget=False) == pytest.approx(0.25)


def test_token_entropy_is_normalised():
  assert M.token_entropy([7]) == 0.0 and M.token_entropy([]) == 0.0
  assert M.token_entropy([1, 2, 3, 4]) == pytest.approx(1.0)  # all distinct: H = log2 n
  assert M.token_entropy([5, 5, 5, 5]) == 0.0
  # [1, 1, 2, 2]: H = 1 bit, log2 4 = 2.
  assert M.token_entropy([1, 1, 2, 2]) == pytest.approx(0.5)


def test_forget_quality_is_the_ks_p_value():
  same = np.linspace(0.1, 2.0, 40)
  assert M.forget_quality(same, same) == pytest.approx(1.0)
  # Disjoint samples of 5 and 5: D = 1, exact two-sided p = 2 / C(10, 5) = 2 / 252.
  assert M.forget_quality([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)


def test_model_utility_and_forget_efficacy():
  assert M.model_utility([0.5, 1.0]) == pytest.approx(2 / (1 / 0.5 + 1 / 1.0))
  assert M.model_utility([0.5, 0.0]) == 0.0  # an empty generation's entropy zeroes utility
  with pytest.raises(ValueError, match="non-negative values"):
    M.model_utility([0.5, -0.1])
  assert M.forget_efficacy([0.2, 0.4, 0.6]) == pytest.approx(0.6)
