r"""Membership inference for any task: per-sample scores, the attack metrics, and the unlearning
summaries built on them.

Scores (`membership_scores`) are oriented so that a HIGHER score means MORE member-like. From a
sample's logits :math:`z`, probabilities :math:`p = \mathrm{softmax}(z)` and label :math:`y`:

* ``loss``: :math:`\log p_y` (the negated cross-entropy);
* ``confidence``: :math:`p_y`;
* ``entropy``: :math:`\sum_c p_c \log p_c` (the negated entropy);
* ``modified_entropy`` (Song and Mittal, 2021): the negation of
  :math:`-(1 - p_y) \log p_y - \sum_{c \ne y} p_c \log(1 - p_c)`;
* ``logit_confidence`` (LiRA's scaling): :math:`\log \frac{p_y}{1 - p_y} = z_y -
  \log \sum_{c \ne y} e^{z_c}`.

A threshold :math:`t` calls a sample a member when its score is at least :math:`t`. Over members
:math:`M` and non-members :math:`N`: TPR = share of :math:`M` called members, FPR = share of
:math:`N` called members, TNR = 1 - FPR, FNR = 1 - TPR, balanced accuracy = (TPR + TNR) / 2, and
the ROC AUC = :math:`P(s_M > s_N) + \frac12 P(s_M = s_N)`. A TPR at FPR :math:`\le \alpha` is
resolved only where :math:`\alpha |N|` is at least ``min_count`` (about 10) non-members, and a
TNR at FNR :math:`\le \alpha` only where :math:`\alpha |M|` is; otherwise it is None.
"""

from collections.abc import Sequence

import numpy as np
import scipy.stats

SCORES = ("loss", "confidence", "entropy", "modified_entropy", "logit_confidence")
LOW_RATES = (0.01, 0.001)  # the FPRs (and FNRs) of the low-error-rate metrics


def _log_softmax(logits) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  if z.ndim != 2 or z.shape[1] < 2:
    raise ValueError(f"Expected logits of shape (n, classes >= 2), got {z.shape}.")
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def membership_scores(logits, labels) -> dict[str, np.ndarray]:
  """Every score of `SCORES` per sample (higher: more member-like), in float64."""
  logp = _log_softmax(logits)
  labels = np.asarray(labels)
  if labels.shape != logp.shape[:1]:
    raise ValueError(f"Expected {logp.shape[0]} labels, got shape {labels.shape}.")
  p = np.exp(logp)
  rows = np.arange(len(labels))
  logp_y, p_y = logp[rows, labels], p[rows, labels]
  # log(1 - p): log1p is exact for p <= 1/2, i.e. for all but a row's most likely class, whose
  # log(1 - p) is the log of the other classes' summed probabilities (exact near p = 1).
  log1m_p = np.log1p(-np.minimum(p, 0.5))
  top = np.argmax(logp, axis=-1)
  rest = logp.copy()
  rest[rows, top] = -np.inf
  log1m_p[rows, top] = np.logaddexp.reduce(rest, axis=-1)
  log1m_p_y = log1m_p[rows, labels]
  other = np.ones_like(p, bool)
  other[rows, labels] = False
  mentr = -(1 - p_y) * logp_y - np.sum(np.where(other, p * log1m_p, 0.0), axis=-1)
  return {
    "loss": logp_y,
    "confidence": p_y,
    "entropy": np.sum(p * logp, axis=-1),
    "modified_entropy": -mentr,
    "logit_confidence": logp_y - log1m_p_y,
  }


def _check(members, nonmembers) -> tuple[np.ndarray, np.ndarray]:
  members, nonmembers = (np.asarray(x, np.float64).ravel() for x in (members, nonmembers))
  if not len(members) or not len(nonmembers):
    raise ValueError("Need at least one member and one non-member score.")
  if np.isnan(members).any() or np.isnan(nonmembers).any():
    raise ValueError("Membership scores must not be NaN.")
  return members, nonmembers


def roc_curve(members, nonmembers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(fpr, tpr, thresholds)`` for every distinct score as threshold, from (0, 0) at +inf to
  (1, 1) at the lowest score; FPR increases along the curve."""
  members, nonmembers = _check(members, nonmembers)
  thresholds = np.unique(np.concatenate([members, nonmembers]))[::-1]
  tpr = 1.0 - np.searchsorted(np.sort(members), thresholds, side="left") / len(members)
  fpr = 1.0 - np.searchsorted(np.sort(nonmembers), thresholds, side="left") / len(nonmembers)
  return (
    np.concatenate([[0.0], fpr]),
    np.concatenate([[0.0], tpr]),
    np.concatenate([[np.inf], thresholds]),
  )


def roc_auc(members, nonmembers) -> float:
  """:math:`P(s_M > s_N) + \\frac12 P(s_M = s_N)`: 1 when every member outscores every
  non-member, 0.5 for one distribution, 0 when every non-member outscores every member."""
  members, nonmembers = _check(members, nonmembers)
  sorted_n = np.sort(nonmembers)
  below = np.searchsorted(sorted_n, members, side="left")
  ties = np.searchsorted(sorted_n, members, side="right") - below
  return float(np.sum(below + 0.5 * ties) / (len(members) * len(nonmembers)))


def tpr_at_fpr(members, nonmembers, fpr: float, min_count: int = 10) -> float | None:
  """The highest TPR of a threshold whose FPR is at most ``fpr``; None when ``fpr`` x the
  number of non-members is under ``min_count`` (too few non-members to resolve it)."""
  members, nonmembers = _check(members, nonmembers)
  if fpr * len(nonmembers) < min_count:
    return None
  fprs, tprs, _ = roc_curve(members, nonmembers)
  return float(np.max(tprs[fprs <= fpr]))


def tnr_at_fnr(members, nonmembers, fnr: float, min_count: int = 10) -> float | None:
  """The highest TNR of a threshold whose FNR is at most ``fnr`` (the mirror of `tpr_at_fpr`:
  members and non-members swap roles, scores flip sign); None when ``fnr`` x the number of
  members is under ``min_count``."""
  members, nonmembers = _check(members, nonmembers)
  return tpr_at_fpr(-nonmembers, -members, fnr, min_count)


def balanced_accuracy(members, nonmembers, threshold: float) -> float:
  """(TPR + TNR) / 2 of calling scores at or above ``threshold`` members."""
  members, nonmembers = _check(members, nonmembers)
  return float((np.mean(members >= threshold) + np.mean(nonmembers < threshold)) / 2)


def best_threshold(members, nonmembers) -> tuple[float, float]:
  """The threshold of highest balanced accuracy (the lowest such threshold on ties), and that
  accuracy: the attack an auditor who knows both sets can mount."""
  fpr, tpr, thresholds = roc_curve(members, nonmembers)
  accuracy = (tpr + 1 - fpr) / 2
  best = int(np.flatnonzero(accuracy == accuracy.max())[-1])
  return float(thresholds[best]), float(accuracy[best])


def privleak(auc: float, reference_auc: float) -> float:
  r"""MUSE's PrivLeak (open-unlearning's ``privleak``) of a forget-vs-holdout AUC against the
  retrained model's: with MUSE's AUC orientation :math:`1 - \mathrm{AUC}`,
  :math:`100 ((1 - \mathrm{AUC}) - (1 - \mathrm{AUC}_{ref})) / (1 - \mathrm{AUC}_{ref})`. Negative
  when forget samples still look more like members than under retraining (under-unlearning),
  positive when less (over-unlearning), 0 at the retrained model."""
  if reference_auc >= 1:
    return float("nan")  # the retrained model separates perfectly: no relative difference
  return 100.0 * ((1 - auc) - (1 - reference_auc)) / (1 - reference_auc)


def unlearning_attacks(
  forget: dict[str, np.ndarray],
  retain: dict[str, np.ndarray],
  test: dict[str, np.ndarray],
  min_count: int = 10,
) -> dict[str, dict[str, float | None]]:
  """Per score, the two threat models of an unlearned model, from `membership_scores` of its
  forget, retain and test sets.

  * ``transfer`` (the paper's setting): the threshold of highest balanced accuracy on retain
    (members) vs test (non-members) is applied to forget vs test: ``forget_member_rate`` (the
    share of forget samples it calls members, the analogue of the ``MIA`` column) and
    ``transfer_balanced_accuracy``.
  * ``audit``: forget (members) vs test (non-members) directly: ``auc``,
    ``best_balanced_accuracy``, ``tpr@fpr=<a>`` and ``tnr@fnr=<a>`` for each rate of `LOW_RATES`
    (None where not resolved).
  """
  results = {}
  for name in forget:
    threshold, _ = best_threshold(retain[name], test[name])
    f, t = forget[name], test[name]
    results[name] = {
      "forget_member_rate": float(np.mean(np.asarray(f) >= threshold)),
      "transfer_balanced_accuracy": balanced_accuracy(f, t, threshold),
      **audit(f, t, min_count),
    }
  return results


def audit(members, nonmembers, min_count: int = 10) -> dict[str, float | None]:
  """The audit view of two sets' scores: ``auc``, ``best_balanced_accuracy``, and
  ``tpr@fpr=<a>`` / ``tnr@fnr=<a>`` for each rate of `LOW_RATES` (None where not resolved)."""
  result = {
    "auc": roc_auc(members, nonmembers),
    "best_balanced_accuracy": best_threshold(members, nonmembers)[1],
  }
  for rate in LOW_RATES:
    result[f"tpr@fpr={rate:g}"] = tpr_at_fpr(members, nonmembers, rate, min_count)
    result[f"tnr@fnr={rate:g}"] = tnr_at_fnr(members, nonmembers, rate, min_count)
  return result


ROC_FPRS = tuple(np.logspace(-4, 0, 41).tolist())  # where a run's ROC is kept, for plots


def roc_at(members, nonmembers, fprs=ROC_FPRS) -> list[float]:
  """The highest TPR at FPR <= each of ``fprs`` (a ROC on a fixed grid, to average over seeds)."""
  fpr, tpr, _ = roc_curve(members, nonmembers)
  return [float(tpr[fpr <= f].max()) for f in fprs]


def attack_table(
  rows: dict[str, list[dict]],
  reference: list[dict],
  score: str = "loss",
  digits: int = 3,
  names: Sequence[str] = SCORES,
) -> str:
  """A Markdown table of the attacks of each row's runs (each a dict of `unlearning_attacks` or
  of `audit` results per attack of ``names``), mean ± population std over runs.

  Columns: forget-vs-test AUC of every attack with its gap to the reference's mean AUC in
  parentheses; then, for ``score``: privleak (of the mean AUCs), the audit's best balanced
  accuracy, TPR at FPR 1% and TNR at FNR 1% (n/a where not resolved), and, where the runs have
  it, the transfer attack's forget member rate.
  """

  def cell(values, gap_to=None):
    values = [np.nan if v is None else v for v in values]
    if np.isnan(values).any():
      return "n/a"
    mean = float(np.mean(values))
    text = f"{mean:.{digits}f}" + (f" ± {np.std(values):.{digits}f}" if len(values) > 1 else "")
    return text + ("" if gap_to is None else f" ({abs(mean - gap_to):.{digits}f})")

  def column(runs, name, metric):
    return [run[name][metric] for run in runs]

  reference_auc = {name: float(np.mean(column(reference, name, "auc"))) for name in names}
  metrics = ["best_balanced_accuracy", "tpr@fpr=0.01", "tnr@fnr=0.01"]
  header = [f"AUC {name}" for name in names]
  header += [f"PrivLeak % ({score})", "best bal. acc.", "TPR@FPR=1%", "TNR@FNR=1%"]
  if "forget_member_rate" in reference[0][score]:
    metrics.append("forget_member_rate")
    header.append("forget member rate")
  lines = ["| Method | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
  for label, runs in rows.items():
    cells = [cell(column(runs, name, "auc"), reference_auc[name]) for name in names]
    auc = float(np.mean(column(runs, score, "auc")))
    cells.append(f"{privleak(auc, reference_auc[score]):+.1f}")
    for metric in metrics:
      cells.append(cell(column(runs, score, metric)))
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _out_references(reference_scores, keep) -> np.ma.MaskedArray:
  """The reference models' scores ``(samples, models)`` of the models that did NOT train on each
  sample (``keep``: True where model ``r`` trained on sample ``i``)."""
  reference_scores, keep = np.asarray(reference_scores, np.float64), np.asarray(keep, bool)
  if reference_scores.ndim != 2 or keep.shape != reference_scores.shape:
    raise ValueError(
      f"Expected reference scores and keep masks of one shape (samples, models), got "
      f"{reference_scores.shape} and {keep.shape}."
    )
  if keep.all(axis=1).any():
    raise ValueError("Every sample needs at least one reference model that did not train on it.")
  return np.ma.masked_array(reference_scores, mask=keep)


def lira_offline(target, reference, keep, global_std: bool = True) -> np.ndarray:
  r"""Offline LiRA (Carlini et al., 2022): how far above the reference models that did not train
  on a sample (OUT) the target model's score of it lies.

  With :math:`\phi` the logit-scaled confidence (``logit_confidence``) and the OUT models' mean
  :math:`\mu_i` and std :math:`\sigma_i` of sample :math:`i`, the membership score is
  :math:`\log \Phi((\phi_i - \mu_i) / \sigma_i)` (higher: more member-like). With ``global_std``
  (the paper's choice for few references) :math:`\sigma` is the std of every OUT score about its
  sample's mean.

  Args:
    target: the target model's scores ``(samples,)``.
    reference: the reference models' scores ``(samples, models)``.
    keep: ``(samples, models)``, True where the reference model trained on the sample.
  """
  out = _out_references(reference, keep)
  mean = out.mean(axis=1).filled(np.nan)
  if global_std:
    std = np.full_like(mean, float(np.sqrt(((out - mean[:, None]) ** 2).mean())))
  else:
    std = out.std(axis=1).filled(np.nan)
  std = np.maximum(std, 1e-6)
  return scipy.stats.norm.logcdf((np.asarray(target, np.float64) - mean) / std)


def rmia(
  target,
  reference,
  keep,
  population_target,
  population_reference,
  a: float = 0.3,
  gamma: float = 1.0,
) -> np.ndarray:
  r"""Offline RMIA (Zarifzadeh et al., 2024): the share of population samples :math:`z` that a
  sample :math:`x` dominates in likelihood ratio,
  :math:`\Pr_z\big[\frac{p(x|\theta) / p(x)}{p(z|\theta) / p(z)} \ge \gamma\big]`.

  :math:`p(\cdot|\theta)` is the target model's probability of the true label (``confidence``),
  and :math:`p(x)` its mean over the reference models that did not train on :math:`x`,
  corrected for having OUT models only: :math:`\frac12((1 + a) \bar p_{OUT}(x) + (1 - a))`.
  The population (e.g. the test set) was trained on by no reference model.

  Args:
    target, reference, keep: as `lira_offline`, with confidences.
    population_target: the target model's confidences of the population ``(m,)``.
    population_reference: the reference models' confidences of the population ``(m, models)``.
  """
  out = _out_references(reference, keep)
  p_x = 0.5 * ((1 + a) * out.mean(axis=1).filled(np.nan) + (1 - a))
  p_z = 0.5 * ((1 + a) * np.mean(population_reference, axis=1) + (1 - a))
  ratio_x = np.asarray(target, np.float64) / p_x
  ratio_z = np.sort(np.asarray(population_target, np.float64) / p_z)
  # ratio_x / ratio_z >= gamma  <=>  ratio_z <= ratio_x / gamma
  return np.searchsorted(ratio_z, ratio_x / gamma, side="right") / len(ratio_z)
