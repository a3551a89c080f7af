"""Offline tokenizers: a byte-level BPE trained on TOFU's text (shipped), or a tokenizer.json.

The shipped ``assets/tofu_bpe_4096.json`` is a byte-level BPE of 4,096 tokens, trained with
Hugging Face's ``tokenizers`` on every question and answer of TOFU (the QA, the paraphrased and
perturbed answers of the evaluation sets) and the IDK answers, with ``<|endoftext|>`` as its only
special token (EOS and padding). Training is deterministic:
``python -m dualoptim_jax.data.tokenizer`` rebuilds the file bit for bit from ``--root``
(default: the TOFU folder beside the repository).
"""

import argparse
import pathlib
from collections.abc import Iterator

import tokenizers

from dualoptim_jax.data import tofu
from dualoptim_jax.data.loaders import PathLike

EOS = "<|endoftext|>"
SHIPPED = pathlib.Path(__file__).with_name("assets") / "tofu_bpe_4096.json"


def tofu_texts(root: PathLike | None = None) -> Iterator[str]:
  """Every question and answer of TOFU, in file order, then the IDK answers."""
  root = pathlib.Path(tofu.TOFU_ROOT if root is None else root)
  files = ["forget10.json", "retain10.json", "retain_perturbed.json"]
  files += ["forget10_perturbed.json", "real_authors_perturbed.json", "world_facts_perturbed.json"]
  for name in files:
    for row in tofu.read_jsonl(root / name):
      for key in ("question", "answer", "paraphrased_answer", "paraphrased_question"):
        if isinstance(row.get(key), str):
          yield row[key]
      perturbed = row.get("perturbed_answer", [])
      yield from [perturbed] if isinstance(perturbed, str) else perturbed
  yield from tofu.load_tofu(root=root).idk


def train_tofu_bpe(root: PathLike | None = None, vocab_size: int = 4096) -> tokenizers.Tokenizer:
  """A byte-level BPE of ``vocab_size`` tokens trained on `tofu_texts` (deterministic)."""
  bpe = tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator(
    tofu_texts(root),
    vocab_size=vocab_size,
    min_frequency=2,
    special_tokens=[EOS],
    show_progress=False,
  )
  return tokenizers.Tokenizer.from_str(bpe.to_str())


def load_tokenizer(path: PathLike | None = None) -> tokenizers.Tokenizer:
  """The tokenizer in ``path`` (a Hugging Face ``tokenizer.json``), by default the shipped BPE."""
  path = pathlib.Path(SHIPPED if path is None else path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file; expected a tokenizer.json.")
  return tokenizers.Tokenizer.from_file(str(path))


def eos_id(tokenizer: tokenizers.Tokenizer) -> int:
  """The id of the EOS (and padding) token: ``<|endoftext|>`` (GPT-2, Phi, the shipped BPE) or
  ``</s>`` (Llama)."""
  for token in (EOS, "</s>"):
    if tokenizer.token_to_id(token) is not None:
      return tokenizer.token_to_id(token)
  raise ValueError(f"The tokenizer has neither {EOS} nor </s>.")


def main(argv=None):
  parser = argparse.ArgumentParser(description="Rebuilds the shipped TOFU BPE tokenizer.")
  parser.add_argument("--root", help="the TOFU folder (default: beside the repository)")
  parser.add_argument("--out", type=pathlib.Path, default=SHIPPED)
  args = parser.parse_args(argv)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  train_tofu_bpe(args.root).save(str(args.out))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
