"""TOFU (Maini et al., 2024): splits, prompt templates, masked labels and length-bucketed batches.

The files are JSON Lines (``*.json``) as TOFU ships them: ``forget01/05/10`` (10, 10 and 9 tasks of
40, 200 and 400 QA), ``retain90/50/10``, the ``*_perturbed`` evaluation sets and
``idontknow.jsonl``. Nothing is downloaded: the data are read from ``root``, by default the
``shared/data/tofu`` folder beside the repository.

Splits follow the reference (``forget.py::get_task_data``): for ``forget0k`` and task ``t``, the
forget set is the file's rows of task ``t``, and the retain set is ``retain{100 - min(10k, 90)}``
plus the file's rows of every other task, i.e. all 4,000 QA but the forget task.
"""

import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from dualoptim_jax.data.loaders import PathLike

TOFU_ROOT = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "tofu"
FORGET_SPLITS = {"forget01": (1, 10), "forget05": (5, 10), "forget10": (10, 9)}  # k, tasks
IGNORE = -100  # the label of a position that no loss counts


@dataclasses.dataclass(frozen=True)
class Template:
  """How a question and its answer become one text: ``prefix + q + separator + a``."""

  prefix: str
  separator: str

  def prompt(self, question: str) -> str:
    return self.prefix + question + self.separator


# The small models use TOFU's ``Question: ...\nAnswer: `` (as TOFU fine-tuned Phi-1.5); "phi" is the
# DualOptim code's Phi-1.5 chat template; "llama2" is TOFU's Llama-2 template with the BOS that
# Llama's tokenizer adds (texts are encoded without special tokens; "<s>" in a text is the BOS).
TEMPLATES = {
  "qa": Template("Question: ", "\nAnswer: "),
  "phi": Template("<|user|>\n", "<|end|>\n<|assistant|>\n"),
  "llama2": Template("<s>[INST] ", " [/INST]"),
}


def read_jsonl(path: PathLike) -> list[dict]:
  """The rows of a JSON Lines file; a bad line raises a ``ValueError`` naming file and line."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file; expected a TOFU JSON Lines file.")
  rows = []
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    if line.strip():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {number}: not JSON ({error}).") from None
  return rows


@dataclasses.dataclass(frozen=True)
class TofuSplit:
  """One unlearning task of TOFU and its evaluation sets (lists of row dicts).

  Attributes:
    forget: the task's QA (``question``, ``answer``).
    retain: every other TOFU QA.
    forget_eval: the task's rows of ``forget0k_perturbed`` (``paraphrased_answer``,
      ``perturbed_answer`` list, ...).
    retain_eval: ``retain_perturbed`` (the last 20 authors, never in a forget task).
    real_authors: ``real_authors_perturbed``.
    world_facts: ``world_facts_perturbed``.
    idk: the "I don't know" answers.
  """

  forget: list[dict]
  retain: list[dict]
  forget_eval: list[dict]
  retain_eval: list[dict]
  real_authors: list[dict]
  world_facts: list[dict]
  idk: list[str]


def load_tofu(forget: str = "forget10", task: int = 1, root: PathLike | None = None) -> TofuSplit:
  """Loads task ``task`` of the split ``forget`` (``forget01``, ``forget05`` or ``forget10``)."""
  if forget not in FORGET_SPLITS:
    raise ValueError(f"Unknown TOFU split {forget!r}; known splits: {', '.join(FORGET_SPLITS)}.")
  k, tasks = FORGET_SPLITS[forget]
  if not 1 <= task <= tasks:
    raise ValueError(f"{forget} has tasks 1 to {tasks}, got {task}.")
  root = pathlib.Path(TOFU_ROOT if root is None else root)
  if not root.is_dir():
    raise FileNotFoundError(f"{root}: no such directory; expected the TOFU files.")
  rows = read_jsonl(root / f"{forget}.json")
  perturbed = read_jsonl(root / f"{forget}_perturbed.json")
  current = str(task)
  idk = [line.strip() for line in (root / "idontknow.jsonl").read_text().splitlines()]
  return TofuSplit(
    forget=[r for r in rows if r["task_id"] == current],
    retain=read_jsonl(root / f"retain{100 - min(10 * k, 90)}.json")
    + [r for r in rows if r["task_id"] != current],
    forget_eval=[r for r in perturbed if r["task_id"] == current],
    retain_eval=read_jsonl(root / "retain_perturbed.json"),
    real_authors=read_jsonl(root / "real_authors_perturbed.json"),
    world_facts=read_jsonl(root / "world_facts_perturbed.json"),
    idk=[line for line in idk if line],
  )


def encode_qa(
  encode: Callable[[str], Sequence[int]],
  template: Template,
  question: str,
  answer: str,
  eos_id: int,
  *,
  mask_question: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
  """Token ids of ``template(question, answer) + EOS`` and their labels.

  The prompt and the answer are tokenized apart, so the question's tokens end exactly where the
  answer's begin; their labels are ``IGNORE`` unless ``mask_question`` is False. The answer's
  tokens and the EOS are their own labels (the loss shifts them by one position).
  """
  prompt = list(encode(template.prompt(question)))
  ids = prompt + list(encode(answer)) + [eos_id]
  labels = ([IGNORE] * len(prompt) if mask_question else prompt) + ids[len(prompt) :]
  return np.asarray(ids, np.int32), np.asarray(labels, np.int32)


def bucket_batches(
  examples: Sequence[tuple[np.ndarray, np.ndarray]],
  batch_size: int,
  buckets: Sequence[int],
  pad_id: int,
  rng: np.random.Generator | None = None,
  *,
  paired: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """One epoch of batches; each example goes to the smallest bucket length that fits it.

  Every bucket's examples (shuffled with ``rng``, else in order) are cut into batches of
  ``batch_size``, the last one filled by repeating that bucket's first examples, so a jitted
  step compiles once per bucket and each example appears at least once; with ``rng`` the batch
  order is shuffled too. Longer examples are cut to the largest bucket. A batch is
  ``{"input_ids", "labels", "attention_mask", "index"}``, right-padded: padding has ``pad_id``,
  label ``IGNORE`` and attention False; ``index`` gives each row's position in ``examples``.
  ``paired`` maps a prefix to sequences parallel to ``examples`` (e.g. ``{"idk_": ...}``, the
  questions with another answer); the batch then also holds ``idk_input_ids``, ``idk_labels`` and
  ``idk_attention_mask``, padded to the same length: an example's bucket fits all its sequences.
  """
  if not examples:
    raise ValueError("Cannot batch an empty set of examples.")
  if batch_size < 1 or not buckets or min(buckets) < 1:
    raise ValueError(f"Need a positive batch size and buckets, got {batch_size} and {buckets}.")
  buckets = sorted(buckets)
  order = np.arange(len(examples)) if rng is None else rng.permutation(len(examples))
  streams = {"": examples, **(paired or {})}
  for prefix, stream in streams.items():
    if len(stream) != len(examples):
      raise ValueError(f"{prefix!r} has {len(stream)} sequences for {len(examples)} examples.")
  lengths = [max(len(s[i][0]) for s in streams.values()) for i in range(len(examples))]
  fits = _bucket_indices([lengths[i] for i in order], buckets)
  chunks = []
  for b, length in enumerate(buckets):
    members = order[fits == b]
    if len(members):
      padded = np.resize(members, -(-len(members) // batch_size) * batch_size)
      chunks += [(length, padded[i : i + batch_size]) for i in range(0, len(padded), batch_size)]
  for c in range(len(chunks)) if rng is None else rng.permutation(len(chunks)):
    length, chosen = chunks[c]
    batch = {"index": chosen.astype(np.int32)}
    for prefix, stream in streams.items():
      input_ids = np.full((batch_size, length), pad_id, np.int32)
      labels = np.full((batch_size, length), IGNORE, np.int32)
      attention = np.zeros((batch_size, length), bool)
      for row, i in enumerate(chosen):
        ids, example_labels = stream[i]
        n = min(len(ids), length)
        input_ids[row, :n], labels[row, :n], attention[row, :n] = ids[:n], example_labels[:n], True
      batch |= {f"{prefix}input_ids": input_ids, f"{prefix}labels": labels}
      batch[f"{prefix}attention_mask"] = attention
    yield batch


def num_bucket_batches(lengths: Sequence[int], batch_size: int, buckets: Sequence[int]) -> int:
  """How many batches `bucket_batches` makes of examples of these lengths."""
  fits = _bucket_indices(lengths, sorted(buckets))
  return int(sum(-(-np.sum(fits == b) // batch_size) for b in range(len(buckets))))


def _bucket_indices(lengths: Sequence[int], buckets: Sequence[int]) -> np.ndarray:
  """The index in the sorted ``buckets`` of the smallest that holds each length (else the last)."""
  return np.minimum(np.searchsorted(buckets, lengths), len(buckets) - 1)
