"""The shipped TOFU tokenizer: rebuilt bit for bit, lossless on TOFU's text, EOS, user files."""

import os

import pytest

from dualoptim_jax.data import tofu
from dualoptim_jax.data import tokenizer as T

pytestmark = pytest.mark.skipif(
  not tofu.TOFU_ROOT.is_dir() and not os.environ.get("CI"), reason=f"no {tofu.TOFU_ROOT}"
)


def test_training_is_deterministic_and_gives_the_shipped_file(tmp_path):
  T.main(["--out", str(tmp_path / "a.json")])
  T.main(["--out", str(tmp_path / "b.json")])
  assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
  assert (tmp_path / "a.json").read_bytes() == T.SHIPPED.read_bytes()


def test_the_shipped_tokenizer_round_trips_tofu_and_has_eos():
  tok = T.load_tokenizer()
  assert tok.get_vocab_size() == 4096 and T.eos_id(tok) == 0
  split = tofu.load_tofu()
  texts = [tofu.TEMPLATES["qa"].prompt(r["question"]) + r["answer"] for r in split.forget[:200]]
  for text in texts:
    assert tok.decode(tok.encode(text).ids) == text
  # Byte-level: text it never saw still round-trips.
  assert tok.decode(tok.encode("Zoë — 東京 ✓").ids) == "Zoë — 東京 ✓"


def test_a_user_tokenizer_file_is_loaded_and_a_missing_one_named(tmp_path):
  T.load_tokenizer().save(str(tmp_path / "tokenizer.json"))
  assert T.load_tokenizer(tmp_path / "tokenizer.json").get_vocab_size() == 4096
  with pytest.raises(FileNotFoundError, match="nothing.json"):
    T.load_tokenizer(tmp_path / "nothing.json")
