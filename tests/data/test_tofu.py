"""TOFU splits from the shipped files (CI has them: the tests do not skip there), templates,
masked labels and length buckets."""

import json
import os

import numpy as np
import pytest

from dualoptim_jax.data import tofu

pytestmark = pytest.mark.skipif(
  not tofu.TOFU_ROOT.is_dir() and not os.environ.get("CI"), reason=f"no {tofu.TOFU_ROOT}"
)


@pytest.mark.parametrize(
  "forget, task, n_forget", [("forget10", 1, 400), ("forget05", 3, 200), ("forget01", 10, 40)]
)
def test_splits_follow_the_reference(forget, task, n_forget):
  split = tofu.load_tofu(forget, task)
  assert len(split.forget) == n_forget and len(split.retain) == 4000 - n_forget
  assert {r["task_id"] for r in split.forget} == {str(task)}
  # Forget and retain together are TOFU's 4,000 QA (forget10 and retain10), each once.
  every = tofu.read_jsonl(tofu.TOFU_ROOT / "forget10.json")
  every += tofu.read_jsonl(tofu.TOFU_ROOT / "retain10.json")
  pairs = sorted((r["question"], r["answer"]) for r in split.forget + split.retain)
  assert pairs == sorted((r["question"], r["answer"]) for r in every)
  assert [r["question"] for r in split.forget_eval] == [r["question"] for r in split.forget]
  assert all(len(r["perturbed_answer"]) == 5 for r in split.forget_eval)
  assert (len(split.retain_eval), len(split.real_authors), len(split.world_facts)) == (
    400,
    100,
    117,
  )
  assert len(split.idk) == 100 and split.idk[0] == "I'm not certain about that."
  # retain_perturbed is the last 20 authors: in the retain set of every task.
  assert {r["question"] for r in split.retain_eval} <= {r["question"] for r in split.retain}


def test_bad_splits_and_files_are_named(tmp_path):
  with pytest.raises(ValueError, match="Unknown TOFU split 'forget20'"):
    tofu.load_tofu("forget20")
  with pytest.raises(ValueError, match="forget10 has tasks 1 to 9, got 10"):
    tofu.load_tofu("forget10", 10)
  with pytest.raises(FileNotFoundError, match="no-tofu"):
    tofu.load_tofu(root=tmp_path / "no-tofu")
  (tmp_path / "bad.json").write_text(json.dumps({"question": "q"}) + "\n{broken\n")
  with pytest.raises(ValueError, match=r"bad.json, line 2: not JSON"):
    tofu.read_jsonl(tmp_path / "bad.json")


def test_a_user_path_is_read(tmp_path):
  """Any folder with the TOFU file names works: a small one built here."""
  rows = [
    {"task_id": str(t), "question": f"q{t}{i}", "answer": f"a{t}{i}"}
    for t in (1, 2)
    for i in range(3)
  ]
  perturbed = [{**r, "paraphrased_answer": "p", "perturbed_answer": ["x"] * 5} for r in rows]
  files = {
    "forget10.json": rows,
    "forget10_perturbed.json": perturbed,
    "retain10.json": [{"question": "r", "answer": "ra"}],
    "retain_perturbed.json": [],
    "real_authors_perturbed.json": [],
    "world_facts_perturbed.json": [],
  }
  for name, content in files.items():
    (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in content))
  (tmp_path / "idontknow.jsonl").write_text("I don't know.\n\n")
  split = tofu.load_tofu("forget10", 2, tmp_path)
  assert [r["question"] for r in split.forget] == ["q20", "q21", "q22"]
  assert [r["question"] for r in split.retain] == ["r", "q10", "q11", "q12"]
  assert split.idk == ["I don't know."]


def encode(text):
  """A byte tokenizer: one token per UTF-8 byte."""
  return list(text.encode())


@pytest.mark.parametrize("name", list(tofu.TEMPLATES))
def test_labels_mask_the_question_and_keep_the_answer_and_eos(name):
  template = tofu.TEMPLATES[name]
  ids, labels = tofu.encode_qa(encode, template, "Who?", "Basil.", eos_id=999)
  prompt = template.prompt("Who?").encode()
  assert bytes(ids[: len(prompt)].tolist()) == prompt  # the template round trips
  assert bytes(ids[len(prompt) : -1].tolist()) == b"Basil." and ids[-1] == 999
  np.testing.assert_array_equal(labels[: len(prompt)], tofu.IGNORE)
  np.testing.assert_array_equal(labels[len(prompt) :], ids[len(prompt) :])
  _, unmasked = tofu.encode_qa(encode, template, "Who?", "Basil.", 999, mask_question=False)
  np.testing.assert_array_equal(unmasked, ids)


def test_templates_read_as_the_reference_writes_them():
  assert tofu.TEMPLATES["qa"].prompt("Q") + "A" == "Question: Q\nAnswer: A"
  assert tofu.TEMPLATES["phi"].prompt("Q") + "A" == "<|user|>\nQ<|end|>\n<|assistant|>\nA"
  assert tofu.TEMPLATES["llama2"].prompt("Q") + "A" == "<s>[INST] Q [/INST]A"


def test_each_example_takes_the_smallest_bucket_and_the_epoch_covers_all():
  examples = [
    tofu.encode_qa(encode, tofu.TEMPLATES["qa"], "q" * n, "a", 0) for n in range(5, 40, 3)
  ]
  lengths = [len(ids) for ids, _ in examples]
  buckets = (24, 32, 64)
  batches = list(tofu.bucket_batches(examples, 4, buckets, pad_id=0, rng=np.random.default_rng(0)))
  per_bucket = [sum(min(b for b in buckets if b >= n) == c for n in lengths) for c in buckets]
  assert len(batches) == sum(-(-k // 4) for k in per_bucket)
  assert len(batches) == tofu.num_bucket_batches(lengths, 4, buckets)
  seen = set()
  for batch in batches:
    width = batch["input_ids"].shape[1]
    for row, i in enumerate(batch["index"]):
      n = int(batch["attention_mask"][row].sum())
      assert n == lengths[i] and width == min(b for b in buckets if b >= n)
      np.testing.assert_array_equal(batch["input_ids"][row, :n], examples[i][0])
      np.testing.assert_array_equal(batch["labels"][row, :n], examples[i][1])
      assert (batch["labels"][row, n:] == tofu.IGNORE).all()
      assert (batch["input_ids"][row, n:] == 0).all()
      seen.add(int(i))
  assert seen == set(range(len(examples)))  # every example at least once
  in_order = [int(i) for b in tofu.bucket_batches(examples, 4, buckets, 0) for i in b["index"]]
  assert in_order[: per_bucket[0]] == sorted(in_order[: per_bucket[0]])  # no rng: file order
  long = [tofu.encode_qa(encode, tofu.TEMPLATES["qa"], "q" * 100, "a", 0)]
  (batch,) = tofu.bucket_batches(long, 1, (24, 32), pad_id=0)
  assert batch["input_ids"].shape == (1, 32)  # cut to the largest bucket
  with pytest.raises(ValueError, match="empty"):
    next(tofu.bucket_batches([], 4, (32,), 0))
