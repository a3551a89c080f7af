"""Evaluating a decoder LM on TOFU: teacher-forced answer likelihoods, batched greedy generation,
the memorisation gate and the per-set TOFU scores (``metrics.py`` has the formulas).

Teacher-forced passes batch the examples by length bucket (right padding); generation left-pads
each prompt to its bucket, masks the padding, and cuts each continuation at its first EOS.
"""

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dualoptim_jax.data.tofu import Template, bucket_batches, encode_qa
from dualoptim_jax.models.decoder import greedy_generate
from dualoptim_jax.tasks.llm import metrics
from dualoptim_jax.tasks.llm.losses import token_nll

Encode = Callable[[str], Sequence[int]]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """How to evaluate: batch sizes, length buckets, the generation budget and the set size.

  ``size`` keeps the first rows of each evaluation set (the reference's ``ds_size`` 300). A batch
  of one length bucket is filled up by repeating rows, so on a CPU small batches waste less (16:
  twice as fast as 64 on 300 questions, 3.5 times on 40).
  """

  batch_size: int = 16
  buckets: tuple[int, ...] = (64, 80, 96, 128, 192, 256)
  prompt_buckets: tuple[int, ...] = (32, 48, 64, 96)
  max_new_tokens: int = 128
  size: int = 300


@nnx.jit
def _teacher_forced(model, input_ids, labels):
  logits, _ = model(input_ids)
  nll, counted = token_nll(logits, labels)
  hits = (jnp.argmax(logits[:, :-1], axis=-1) == labels[:, 1:]) | ~counted
  return nll.sum(axis=1), counted.sum(axis=1), hits.all(axis=1)


def answer_nll(
  model: nnx.Module, examples: Sequence[tuple[np.ndarray, np.ndarray]], config: EvalConfig, pad_id
) -> tuple[np.ndarray, np.ndarray]:
  """Per example, the mean NLL of its labelled tokens and whether greedy decoding of the prompt
  reproduces them all (every labelled token is the argmax given the true prefix)."""
  longest = max(len(ids) for ids, _ in examples)
  if longest > max(config.buckets):
    raise ValueError(f"An example of {longest} tokens exceeds the buckets {config.buckets}.")
  nll, exact = np.zeros(len(examples)), np.zeros(len(examples), bool)
  for batch in bucket_batches(examples, config.batch_size, config.buckets, pad_id):
    total, count, hits = jax.device_get(_teacher_forced(model, batch["input_ids"], batch["labels"]))
    nll[batch["index"]] = total / np.maximum(count, 1)
    exact[batch["index"]] = hits
  return nll, exact


def generate(
  model: nnx.Module,
  encode: Encode,
  prompts: Sequence[str],
  config: EvalConfig,
  eos_id: int,
) -> list[list[int]]:
  """The greedy continuation of each prompt, up to ``max_new_tokens`` and before its first EOS."""
  encoded = [list(encode(p)) for p in prompts]
  buckets = sorted(config.prompt_buckets)
  groups: dict[int, list[int]] = {}
  for i, ids in enumerate(encoded):
    length = next((b for b in buckets if b >= len(ids)), None)
    if length is None:
      raise ValueError(f"A prompt of {len(ids)} tokens exceeds the prompt buckets {buckets}.")
    groups.setdefault(length, []).append(i)
  out: list[list[int]] = [[] for _ in prompts]
  for length, members in groups.items():
    for start in range(0, len(members), config.batch_size):
      chosen = members[start : start + config.batch_size]
      rows = len(chosen)
      ids = np.full((config.batch_size, length), eos_id, np.int32)
      mask = np.zeros((config.batch_size, length), bool)
      for row, i in enumerate(chosen):
        ids[row, length - len(encoded[i]) :] = encoded[i]
        mask[row, length - len(encoded[i]) :] = True
      mask[rows:, -1] = True  # filler rows: one visible token keeps attention well defined
      tokens = np.asarray(greedy_generate(model, ids, config.max_new_tokens, mask))
      for row, i in enumerate(chosen):
        sequence = tokens[row].tolist()
        out[i] = sequence[: sequence.index(eos_id)] if eos_id in sequence else sequence
  return out


def memorisation(
  model: nnx.Module,
  encode: Encode,
  template: Template,
  rows: Sequence[dict],
  config: EvalConfig,
  eos_id: int,
) -> dict[str, float]:
  """``{"exact", "probability"}`` on training QA: the share of answers that greedy decoding
  reproduces token for token, and the mean answer probability :math:`e^{-\\bar L}`."""
  examples = [encode_qa(encode, template, r["question"], r["answer"], eos_id) for r in rows]
  nll, exact = answer_nll(model, examples, config, eos_id)
  return {"exact": float(exact.mean()), "probability": float(np.exp(-nll).mean())}


def passes_gate(scores: dict[str, float], exact: float = 0.95, probability: float = 0.9) -> bool:
  """The memorisation gate: exact-greedy share and mean answer probability above thresholds."""
  return scores["exact"] >= exact and scores["probability"] >= probability


def evaluate_set(
  model: nnx.Module,
  encode: Encode,
  decode: Callable[[Sequence[int]], str],
  template: Template,
  rows: Sequence[dict],
  config: EvalConfig,
  eos_id: int,
  *,
  forget: bool,
  relative: bool = False,
) -> dict:
  """The TOFU scores of one evaluation set (its first ``config.size`` rows).

  Returns ``{"ROUGE", "Probability", "Truth Ratio", "Token Entropy", "truth_ratios"}``: the four
  set scores and the per-question truth ratios :math:`R` (for forget quality). ``relative``
  (Real Authors, World Facts) scores the probability against the perturbed answers and takes the
  answer itself as the paraphrase; ``forget`` picks the forget set's truth-ratio aggregation.
  """
  rows = list(rows)[: config.size]
  if not rows:
    raise ValueError("Cannot evaluate an empty set.")

  def nll_of(answers):
    examples = [
      encode_qa(encode, template, r["question"], a, eos_id)
      for r, a in zip(rows, answers, strict=True)
    ]
    return answer_nll(model, examples, config, eos_id)[0]

  perturbed = [
    [p] if isinstance(p, str) else list(p) for p in (r["perturbed_answer"] for r in rows)
  ]
  k = len(perturbed[0])
  if any(len(p) != k for p in perturbed):
    raise ValueError("Every row of an evaluation set needs as many perturbed answers.")
  nll_true = nll_of([r["answer"] for r in rows])
  nll_para = nll_true if relative else nll_of([r["paraphrased_answer"] for r in rows])
  nll_pert = np.stack([nll_of([p[j] for p in perturbed]) for j in range(k)], axis=1)
  generations = generate(
    model, encode, [template.prompt(r["question"]) for r in rows], config, eos_id
  )
  ratios = metrics.truth_ratios(nll_para, nll_pert)
  probability = (
    metrics.relative_probability(nll_true, nll_pert)
    if relative
    else metrics.answer_probability(nll_true)
  )
  return {
    "ROUGE": float(
      metrics.rouge_l_recall([decode(g) for g in generations], [r["answer"] for r in rows]).mean()
    ),
    "Probability": float(probability.mean()),
    "Truth Ratio": metrics.truth_ratio_score(ratios, forget=forget),
    "Token Entropy": float(np.mean([metrics.token_entropy(g) for g in generations])),
    "truth_ratios": ratios.tolist(),
  }


SCORES = ("ROUGE", "Probability", "Truth Ratio", "Token Entropy")


def tofu_scores(sets: dict[str, dict], retain_model_forget: dict | None = None) -> dict[str, float]:
  """The aggregate TOFU scores of a model's evaluated sets (``evaluate_set`` outputs by name).

  ``MU``: the harmonic mean of the four scores of every set but ``forget``; ``UFE``: 1 - the mean
  of the forget set's ROUGE, Probability and Truth Ratio; ``Avg`` = (MU + UFE) / 2; ``FQ`` (with
  the retain model's forget-set evaluation): the KS p-value of the two truth-ratio samples.
  """
  utility = [sets[name][s] for name in sets if name != "forget" for s in SCORES]
  forget = sets["forget"]
  scores = {
    "MU": metrics.model_utility(utility),
    "UFE": metrics.forget_efficacy([forget[s] for s in ("ROUGE", "Probability", "Truth Ratio")]),
  }
  scores["Avg"] = (scores["MU"] + scores["UFE"]) / 2
  if retain_model_forget is not None:
    scores["FQ"] = metrics.forget_quality(
      forget["truth_ratios"], retain_model_forget["truth_ratios"]
    )
  return scores
