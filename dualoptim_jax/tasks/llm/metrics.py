r"""The TOFU scores (reference section 6.5), as functions of generations and per-token losses.

With :math:`\bar L` a per-token negative log-likelihood of an answer (its EOS counted):

* ROUGE: mean ROUGE-L recall (``rouge_score``, Porter stemmer) of a generation against the answer.
* Probability: mean :math:`e^{-\bar L}` (retain and forget sets); for Real Authors and World Facts
  the mean of :math:`P_\text{true} / (P_\text{true} + \sum_j P_{\text{pert},j})`.
* Truth ratio: :math:`R = \exp(\text{mean}_j \bar L_{\text{pert},j} - \bar L_\text{para})`; the
  forget set scores :math:`1 - \text{mean}\,\min(R, 1/R)`, the others
  :math:`\text{mean}\max(0, 1 - 1/R)`.
* Token entropy: :math:`H / \log_2 n` of a generation's unigram distribution over its n tokens
  (0 for one token or none).
* Model utility: the harmonic mean of the utility values; untargeted forget efficacy (UFE):
  1 - the mean of the forget values; forget quality: the KS-test p-value of the forget set's
  truth ratios :math:`R` against the retain model's (TOFU's and open-unlearning's definition).
"""

from collections.abc import Sequence

import numpy as np
import scipy.stats
from rouge_score import rouge_scorer

_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(generations: Sequence[str], answers: Sequence[str]) -> np.ndarray:
  """Per example, the ROUGE-L recall of the generation against its answer."""
  if len(generations) != len(answers):
    raise ValueError(f"{len(generations)} generations for {len(answers)} answers.")
  return np.array(
    [_ROUGE.score(a, g)["rougeL"].recall for g, a in zip(generations, answers, strict=True)]
  )


def answer_probability(nll: np.ndarray) -> np.ndarray:
  """:math:`e^{-\\bar L}` per example, from per-token NLLs :math:`\\bar L`."""
  return np.exp(-np.asarray(nll, np.float64))


def relative_probability(nll_true: np.ndarray, nll_perturbed: np.ndarray) -> np.ndarray:
  """:math:`P_\\text{true} / (P_\\text{true} + \\sum_j P_{\\text{pert},j})` per example.

  Args:
    nll_true: ``(n,)`` per-token NLLs of the true answers.
    nll_perturbed: ``(n, k)`` per-token NLLs of the k perturbed answers.
  """
  p_true = answer_probability(nll_true)
  return p_true / (p_true + answer_probability(nll_perturbed).sum(axis=-1))


def truth_ratios(nll_paraphrased: np.ndarray, nll_perturbed: np.ndarray) -> np.ndarray:
  """The truth ratio of each example (see the module docstring)."""
  nll_perturbed = np.asarray(nll_perturbed, np.float64)
  return np.exp(nll_perturbed.mean(axis=-1) - np.asarray(nll_paraphrased, np.float64))


def truth_ratio_score(ratios: np.ndarray, *, forget: bool) -> float:
  """The set's truth-ratio score: forget :math:`1 - \\text{mean}\\min(R, 1/R)`, else
  :math:`\\text{mean}\\max(0, 1 - 1/R)`."""
  r = np.asarray(ratios, np.float64)
  if forget:
    return float(1 - np.mean(np.minimum(r, 1 / r)))
  return float(np.mean(np.maximum(0.0, 1 - 1 / r)))


def token_entropy(tokens: Sequence[int]) -> float:
  """Normalised unigram entropy :math:`H / \\log_2 n` of a generation's n tokens."""
  n = len(tokens)
  if n <= 1:
    return 0.0
  _, counts = np.unique(np.asarray(tokens), return_counts=True)
  p = counts / n
  return float(-(p * np.log2(p)).sum() / np.log2(n))


def forget_quality(ratios: np.ndarray, retain_model_ratios: np.ndarray) -> float:
  """The two-sample KS-test p-value of the forget set's truth ratios against the retain model's."""
  return float(scipy.stats.ks_2samp(ratios, retain_model_ratios).pvalue)


def model_utility(values: Sequence[float]) -> float:
  """The harmonic mean of the utility values (non-negative; 0 if any is 0, as scipy's)."""
  values = np.asarray(values, np.float64)
  if values.size == 0 or (values < 0).any():
    raise ValueError(f"Model utility needs non-negative values, got {values.tolist()}.")
  return 0.0 if (values == 0).any() else float(scipy.stats.hmean(values))


def forget_efficacy(values: Sequence[float]) -> float:
  """Untargeted forget efficacy: 1 - the mean of the forget-set values (ROUGE, probability, ...)."""
  return float(1 - np.mean(values))
