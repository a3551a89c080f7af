"""Fine-tuning a tiny decoder until it passes the memorisation gate, resuming, and the evaluation
helpers against direct computations."""

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from dualoptim_jax.core import checkpoint
from dualoptim_jax.data import tofu
from dualoptim_jax.data.tokenizer import eos_id, load_tokenizer
from dualoptim_jax.models.decoder import Decoder, DecoderConfig
from dualoptim_jax.tasks.llm import evaluate as E
from dualoptim_jax.tasks.llm import metrics
from dualoptim_jax.tasks.llm.finetune import FinetuneConfig, finetune_lm
from dualoptim_jax.tasks.llm.losses import token_nll

pytestmark = pytest.mark.skipif(
  not tofu.TOFU_ROOT.is_dir() and not os.environ.get("CI"), reason=f"no {tofu.TOFU_ROOT}"
)
TOKENIZER = load_tokenizer()
EOS = eos_id(TOKENIZER)
TEMPLATE = tofu.TEMPLATES["qa"]
EVAL = E.EvalConfig(
  batch_size=4, buckets=(48, 64, 96, 128), prompt_buckets=(24, 32, 48), max_new_tokens=64
)
RECIPE = FinetuneConfig(epochs=30, batch_size=4, lr=3e-3, warmup_steps=5, buckets=(64, 96, 128))


def encode(text):
  return TOKENIZER.encode(text).ids


@pytest.fixture(scope="module")
def rows():
  every = tofu.read_jsonl(tofu.TOFU_ROOT / "retain10.json")
  return sorted(every, key=lambda r: len(r["answer"]))[:8]  # the 8 shortest answers


def new_model():
  config = DecoderConfig(TOKENIZER.get_vocab_size(), dim=64, layers=2, heads=2, max_len=160)
  return Decoder(config, rngs=nnx.Rngs(0))


def examples_of(rows):
  return [tofu.encode_qa(encode, TEMPLATE, r["question"], r["answer"], EOS) for r in rows]


@pytest.fixture(scope="module")
def trained(rows):
  graphdef, state = finetune_lm(new_model(), examples_of(rows), RECIPE, pad_id=EOS, progress=False)
  return nnx.merge(graphdef, state.params, state.model_state)


def test_fine_tuning_passes_the_memorisation_gate_and_generation_reproduces_answers(rows, trained):
  before = E.memorisation(new_model(), encode, TEMPLATE, rows, EVAL, EOS)
  assert not E.passes_gate(before) and before["probability"] < 0.01
  after = E.memorisation(trained, encode, TEMPLATE, rows, EVAL, EOS)
  assert E.passes_gate(after), after
  generations = E.generate(
    trained, encode, [TEMPLATE.prompt(r["question"]) for r in rows], EVAL, EOS
  )
  texts = [TOKENIZER.decode(g) for g in generations]
  np.testing.assert_allclose(metrics.rouge_l_recall(texts, [r["answer"] for r in rows]), 1.0)


def test_batched_answer_nll_equals_one_unpadded_pass_per_example(rows, trained):
  examples = examples_of(rows[:6])
  nll, exact = E.answer_nll(trained, examples, EVAL, EOS)
  for i, (ids, labels) in enumerate(examples):
    logits, _ = trained(ids[None])
    per_token, counted = token_nll(logits, labels[None])
    np.testing.assert_allclose(nll[i], per_token.sum() / counted.sum(), rtol=1e-5)
    hits = np.argmax(logits[0, :-1], -1) == labels[1:]
    assert exact[i] == bool(np.all(hits | ~np.asarray(counted[0])))


def test_generation_of_mixed_lengths_equals_one_prompt_at_a_time(trained, rows):
  prompts = [TEMPLATE.prompt(r["question"]) for r in rows[:3]] + ["Question: Who?\nAnswer: "]
  config = dataclasses.replace(EVAL, max_new_tokens=12)
  together = E.generate(trained, encode, prompts, config, EOS)
  alone = [
    E.generate(trained, encode, [p], dataclasses.replace(config, batch_size=1), EOS)[0]
    for p in prompts
  ]
  assert together == alone
  with pytest.raises(ValueError, match="exceeds the prompt buckets"):
    E.generate(trained, encode, ["word " * 60], config, EOS)


def test_resuming_fine_tuning_equals_a_straight_run(rows, tmp_path):
  recipe = dataclasses.replace(RECIPE, epochs=2)
  examples = examples_of(rows)

  def tune(recipe, directory=None):
    model = new_model()
    return finetune_lm(
      model, examples, recipe, pad_id=EOS, checkpoint_dir=directory, progress=False
    )[1]

  straight = tune(recipe)
  tune(recipe, tmp_path)
  shutil.rmtree(tmp_path / "2")  # as if interrupted during epoch 2
  resumed = tune(recipe, tmp_path)
  assert checkpoint.latest_step(tmp_path) == 2
  jax.tree.map(np.testing.assert_array_equal, resumed.params, straight.params)
  with pytest.raises(ValueError, match="other hyper-parameters"):
    tune(dataclasses.replace(recipe, lr=1e-3), tmp_path)


def test_tofu_scores_aggregate_the_sets_as_the_reference():
  forget = {"ROUGE": 0.9, "Probability": 0.8, "Truth Ratio": 0.4, "Token Entropy": 0.5}
  retain = {"ROUGE": 0.5, "Probability": 0.25, "Truth Ratio": 0.5, "Token Entropy": 1.0}
  sets = {"forget": {**forget, "truth_ratios": [0.1, 0.2, 0.3]}, "retain": retain}
  scores = E.tofu_scores(sets, {"truth_ratios": [0.1, 0.2, 0.3]})
  assert scores["MU"] == pytest.approx(4 / (2 + 4 + 2 + 1))  # harmonic mean of the retain four
  assert scores["UFE"] == pytest.approx(1 - (0.9 + 0.8 + 0.4) / 3)
  assert scores["Avg"] == pytest.approx((scores["MU"] + scores["UFE"]) / 2)
  assert scores["FQ"] == pytest.approx(1.0)  # identical samples


@pytest.mark.parametrize("name", ["forget", "real_authors"])
def test_a_set_scores_from_its_own_answer_likelihoods_and_generations(trained, name):
  split = tofu.load_tofu("forget10", 1)
  rows = (split.forget_eval if name == "forget" else split.real_authors)[:5]
  relative = name == "real_authors"
  config = dataclasses.replace(EVAL, size=4, max_new_tokens=6)
  got = E.evaluate_set(
    trained,
    encode,
    TOKENIZER.decode,
    TEMPLATE,
    rows,
    config,
    EOS,
    forget=not relative,
    relative=relative,
  )

  def nll(answer_of):  # one unpadded pass per example
    out = []
    for r in rows[:4]:
      ids, labels = tofu.encode_qa(encode, TEMPLATE, r["question"], answer_of(r), EOS)
      per_token, counted = token_nll(trained(ids[None])[0], labels[None])
      out.append(float(per_token.sum() / counted.sum()))
    return np.array(out)

  k = len(rows[0]["perturbed_answer"])  # 5 in the forget set, 3 for Real Authors
  perturbed = [lambda r, j=j: r["perturbed_answer"][j] for j in range(k)]
  true = nll(lambda r: r["answer"])
  para = true if relative else nll(lambda r: r["paraphrased_answer"])
  pert = np.stack([nll(f) for f in perturbed], axis=1)
  ratios = np.exp(pert.mean(axis=1) - para)
  np.testing.assert_allclose(got["truth_ratios"], ratios, rtol=1e-4)
  if relative:
    p = np.exp(-true)
    expected = np.mean(p / (p + np.exp(-pert).sum(axis=1)))
    assert got["Truth Ratio"] == pytest.approx(np.mean(np.maximum(0, 1 - 1 / ratios)), rel=1e-4)
  else:
    expected = np.mean(np.exp(-true))
    assert got["Truth Ratio"] == pytest.approx(
      1 - np.mean(np.minimum(ratios, 1 / ratios)), rel=1e-4
    )
  assert got["Probability"] == pytest.approx(expected, rel=1e-4)
  generations = E.generate(
    trained, encode, [TEMPLATE.prompt(r["question"]) for r in rows[:4]], config, EOS
  )
  rouge = metrics.rouge_l_recall(
    [TOKENIZER.decode(g) for g in generations], [r["answer"] for r in rows[:4]]
  )
  assert got["ROUGE"] == pytest.approx(rouge.mean())
  assert got["Token Entropy"] == pytest.approx(
    np.mean([metrics.token_entropy(g) for g in generations])
  )
