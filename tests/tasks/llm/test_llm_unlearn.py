"""Unlearning schedules and optimizers on toy problems, and tiny runs that must really unlearn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dualoptim_jax.data.tofu import IGNORE, bucket_batches
from dualoptim_jax.models.decoder import Decoder, DecoderConfig
from dualoptim_jax.optim import FORGET, RETAIN
from dualoptim_jax.tasks.llm import metrics
from dualoptim_jax.tasks.llm.evaluate import EvalConfig, answer_nll, generate
from dualoptim_jax.tasks.llm.finetune import FinetuneConfig, finetune_lm
from dualoptim_jax.tasks.llm.unlearn import (
  Stream,
  UnlearnConfig,
  lr_schedule,
  parse_method,
  steps_per_epoch,
  unlearn_lm,
  unlearn_tx,
)


def test_steps_per_epoch_are_the_references():
  config = UnlearnConfig()  # batch 40, 1 forget : 5 retain
  assert steps_per_epoch(config, 400, "dual") == 60  # forget10: 5 epochs = 300 steps
  assert steps_per_epoch(config, 400, "joint") == 10
  assert steps_per_epoch(config, 40, "shared") == 6  # forget01
  assert steps_per_epoch(UnlearnConfig(forget_steps=2, retain_steps=3), 400, "plus") == 25
  # 9 forget batches, cycles of 3 forget + 2 retain steps: 3 cycles, 15 steps (exact integers).
  assert steps_per_epoch(UnlearnConfig(forget_steps=3, retain_steps=2), 360, "dual") == 15


def test_the_learning_rate_is_hugging_faces_linear_warmup_and_decay():
  lr, warmup, total = 1e-3, 60, 300
  schedule = lr_schedule(lr, warmup, total)
  for k in [0, 1, 30, 59, 60, 61, 150, 299]:  # k = T - 1, the 0-indexed optimizer step
    expected = lr * (k / warmup if k < warmup else max(0, (total - k) / (total - warmup)))
    np.testing.assert_allclose(schedule(k), expected, rtol=1e-5, err_msg=str(k))


@pytest.mark.parametrize("optimizer", ["shared", "dual", "plus", "plus8"])
def test_the_first_step_a_forget_step_moves_nothing_but_later_steps_do(optimizer):
  params = {"w": jnp.ones((8, 8)), "b": jnp.ones(8)}
  grads = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), params)
  tx = unlearn_tx(UnlearnConfig(lr=1e-2, weight_decay=0.1), optimizer, 2.0, 12, 6)
  state = tx.init(params)
  updates, state = tx.update(grads, state, params, objective=FORGET)
  # lr 0 at the first step: no move, no weight decay, yet the moments saw the gradient.
  assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates))
  assert any(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(state) if x.dtype == jnp.float32)
  updates, _ = tx.update(grads, state, params, objective=RETAIN)
  assert all(float(jnp.abs(u).max()) > 0 for u in jax.tree.leaves(updates))


def test_dualoptim_forget_steps_leave_the_retain_state_untouched():
  params = {"w": jnp.ones((4, 4))}
  tx = unlearn_tx(UnlearnConfig(lr=1e-2), "dual", 1.0, 12, 2)
  state = tx.init(params)
  rng = np.random.default_rng(0)
  for objective in [FORGET, RETAIN, RETAIN, FORGET]:
    g = {"w": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)}
    before = state
    _, state = tx.update(g, state, params, objective=objective)
    other = RETAIN if objective == FORGET else FORGET
    dual_before, dual_after = before[1].inner_states, state[1].inner_states  # after the clipping
    jax.tree.map(np.testing.assert_array_equal, dual_before[other], dual_after[other])
    assert not np.array_equal(dual_before[objective].mu["w"], dual_after[objective].mu["w"])


def test_paired_batches_share_a_bucket_that_fits_the_longer_sequence():
  short = (np.arange(3, dtype=np.int32), np.arange(3, dtype=np.int32))
  long = (np.arange(7, dtype=np.int32), np.arange(7, dtype=np.int32))
  (batch,) = bucket_batches([short], 1, (4, 8), pad_id=0, paired={"idk_": [long]})
  assert batch["input_ids"].shape == batch["idk_input_ids"].shape == (1, 8)
  np.testing.assert_array_equal(batch["labels"][0], [0, 1, 2] + [IGNORE] * 5)
  np.testing.assert_array_equal(batch["idk_labels"][0], list(range(7)) + [IGNORE])
  with pytest.raises(ValueError, match="'idk_' has 2 sequences for 1 examples"):
    list(bucket_batches([short], 1, (8,), 0, paired={"idk_": [long, long]}))


def test_bad_methods_and_optimizers_are_refused():
  assert parse_method("IDK+AP") == ("IDK", "AP")
  for bad in ["ME", "ME+XX", "SimNPO+GD"]:
    with pytest.raises(ValueError, match="Unknown method"):
      parse_method(bad)
  with pytest.raises(ValueError, match="Unknown optimizer 'adam'"):
    steps_per_epoch(UnlearnConfig(), 10, "adam")
  with pytest.raises(ValueError, match="split into 3 micro-batches"):
    UnlearnConfig(batch_size=40, micro_batches=3)


# A tiny "TOFU": questions of 4 tokens whose answers are 6 random tokens, memorised by a tiny model.
VOCAB, EOS = 48, 0
PROMPT_LENGTH = 4


def _qa(rng, n):
  rows = []
  for _ in range(n):
    prompt = rng.integers(1, VOCAB, PROMPT_LENGTH).astype(np.int32)
    answer = rng.integers(1, VOCAB, 6).astype(np.int32)
    ids = np.concatenate([prompt, answer, [EOS]]).astype(np.int32)
    labels = np.where(np.arange(len(ids)) < PROMPT_LENGTH, IGNORE, ids).astype(np.int32)
    rows.append((ids, labels))
  return rows


@pytest.fixture(scope="module")
def memorised():
  rng = np.random.default_rng(0)
  forget, retain, idk = _qa(rng, 8), _qa(rng, 24), _qa(rng, 32)
  idk_forget = [
    (np.concatenate([f[0][:PROMPT_LENGTH], i[0][PROMPT_LENGTH:]]), i[1])
    for f, i in zip(forget, idk[:8], strict=True)
  ]
  idk_retain = [
    (np.concatenate([r[0][:PROMPT_LENGTH], i[0][PROMPT_LENGTH:]]), i[1])
    for r, i in zip(retain, idk[8:], strict=True)
  ]
  config = DecoderConfig(vocab_size=VOCAB, dim=64, layers=2, heads=2, max_len=16)
  graphdef, state = finetune_lm(
    Decoder(config, rngs=nnx.Rngs(0)),
    forget + retain,
    FinetuneConfig(epochs=60, batch_size=8, lr=1e-2, warmup_steps=10, buckets=(16,)),
    pad_id=EOS,
    progress=False,
  )
  model = nnx.merge(graphdef, state.params, state.model_state)
  return model, Stream(forget, idk_forget), Stream(retain, idk_retain)


EVAL = EvalConfig(batch_size=32, buckets=(16,), prompt_buckets=(PROMPT_LENGTH,), max_new_tokens=8)


def _rouge(model, examples):
  """Mean ROUGE-L recall of the greedy answers, tokens written as words."""
  prompts = [" ".join(map(str, ids[:PROMPT_LENGTH])) for ids, _ in examples]
  generated = generate(model, lambda s: [int(w) for w in s.split()], prompts, EVAL, EOS)
  answers = [" ".join(map(str, ids[PROMPT_LENGTH:-1])) for ids, _ in examples]
  return metrics.rouge_l_recall([" ".join(map(str, g)) for g in generated], answers).mean()


def test_the_toy_model_has_memorised_both_sets(memorised):
  model, forget, retain = memorised
  for stream in (forget, retain):
    assert answer_nll(model, stream.examples, EVAL, EOS)[1].mean() == 1.0
    assert _rouge(model, stream.examples) == 1.0


@pytest.mark.parametrize("optimizer", ["shared", "joint", "dual", "plus", "plus8"])
def test_a_tiny_run_unlearns_with_every_optimizer(memorised, optimizer):
  model, forget, retain = memorised
  # Each optimizer at a forget rate of its own, as a grid would pick: a shared state keeps the
  # forget direction in its momentum through the retain steps, so the separate states (whose
  # forget moments act on forget steps only) need a larger forget lr for the same forgetting;
  # joint takes one step per forget batch (24 steps, as the 4 alternating epochs) and, as the
  # reference's joint baselines (forget_coeff 0.1), a smaller forget weight.
  epochs, ratio = {"shared": (4, 1.0), "joint": (24, 0.3)}.get(optimizer, (8, 4.0))
  config = UnlearnConfig(lr=3e-3, batch_size=8, epochs=epochs, buckets=(16,))
  before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
  graphdef, state = unlearn_lm(
    model,
    forget,
    retain,
    config,
    "GA+GD",
    optimizer,
    forget_lr_ratio=ratio,
    pad_id=EOS,
    progress=False,
  )
  unlearned = nnx.merge(graphdef, state.params, state.model_state)
  forget_rouge, retain_rouge = (
    _rouge(unlearned, forget.examples),
    _rouge(unlearned, retain.examples),
  )
  assert forget_rouge < 0.4, forget_rouge
  assert retain_rouge > 0.9, retain_rouge
  # The dual states count their own steps: 1 forget then 5 retain per cycle, 6 steps an epoch.
  if optimizer == "dual":
    counts = {k: int(s.count) for k, s in state.opt_state[1].inner_states.items()}
    assert counts == {FORGET: 8, RETAIN: 40}
  # The model passed in is unchanged (it is the frozen reference of NPO, DPO and KL).
  jax.tree.map(np.testing.assert_array_equal, before, nnx.state(model, nnx.Param))


@pytest.mark.parametrize("optimizer", ["dual", "joint"])
def test_an_interrupted_run_with_micro_batches_resumes_as_a_straight_run(
  memorised, optimizer, tmp_path
):
  model, forget, retain = memorised
  config = UnlearnConfig(lr=3e-3, batch_size=8, micro_batches=2, epochs=3, buckets=(16,))
  args = (model, forget, retain, config, "NPO+AP", optimizer)
  _, straight = unlearn_lm(*args, forget_lr_ratio=2.0, pad_id=EOS, progress=False)

  class Interrupted(Exception):
    pass

  def stop_at_epoch_two(epoch, graphdef, state):
    if epoch == 2:
      raise Interrupted

  with pytest.raises(Interrupted):
    unlearn_lm(
      *args,
      forget_lr_ratio=2.0,
      pad_id=EOS,
      checkpoint_dir=tmp_path,
      on_epoch=stop_at_epoch_two,
      progress=False,
    )
  epochs = []
  _, resumed = unlearn_lm(
    *args,
    forget_lr_ratio=2.0,
    pad_id=EOS,
    checkpoint_dir=tmp_path,
    on_epoch=lambda epoch, graphdef, state: epochs.append(epoch),
    progress=False,
  )
  assert epochs == [2, 3]  # epoch 2's evaluation had not finished: it runs again
  jax.tree.map(np.testing.assert_array_equal, straight.params, resumed.params)
  with pytest.raises(ValueError, match="other hyper-parameters"):
    unlearn_lm(*args, pad_id=EOS, checkpoint_dir=tmp_path, run_key={"target": "x"}, progress=False)
