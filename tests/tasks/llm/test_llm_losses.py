"""The causal-LM loss and the unlearning losses on hand-computed cases."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from dualoptim_jax.data.tofu import IGNORE
from dualoptim_jax.tasks.llm import losses
from dualoptim_jax.tasks.llm.losses import mean_token_nll, token_nll


def test_position_t_predicts_label_t_plus_one_and_ignored_labels_do_not_count():
  # Position 0 predicts label 1 with p = 2 / 4; position 1 predicts label 2 with p = 1 / 3;
  # position 2 has no next label, and the second row's labels are all ignored but one.
  logits = jnp.asarray(
    [
      [[0.0, math.log(2.0), 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]],
      [[0.0, 0.0, 0.0], [0.0, 0.0, math.log(3.0)], [1.0, 2.0, 3.0]],
    ]
  )
  labels = jnp.asarray([[IGNORE, 1, 2], [IGNORE, IGNORE, 2]])
  nll, counted = token_nll(logits, labels)
  np.testing.assert_array_equal(counted, [[True, True], [False, True]])
  np.testing.assert_allclose(nll, [[math.log(2), math.log(3)], [0.0, -math.log(3 / 5)]], rtol=1e-6)
  expected = (math.log(2) + math.log(3) - math.log(3 / 5)) / 3
  np.testing.assert_allclose(mean_token_nll(logits, labels), expected, rtol=1e-6)


# The unlearning losses (reference 6.4) on fixed logits, against values written out by hand.
BETA = 0.1


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_sequence_nll_sums_each_rows_counted_tokens():
  logits = np.zeros((2, 3, 4))
  logits[0, 0, 1] = math.log(3.0)  # p(1) = 3 / 6 at position 0
  labels = jnp.asarray([[IGNORE, 1, 2], [IGNORE, IGNORE, IGNORE]])
  # Row 0: -log(1/2) - log(1/4); row 1 counts nothing.
  np.testing.assert_allclose(
    losses.sequence_nll(jnp.asarray(logits), labels), [math.log(2) + math.log(4), 0.0], rtol=1e-6
  )


def test_npo_dpo_and_ap_match_their_formulas_and_log_two_at_the_reference():
  nll, ref = jnp.asarray([3.0, 5.0]), jnp.asarray([2.0, 7.0])
  sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
  npo = -2 / BETA * np.mean([math.log(sigmoid(BETA * 1.0)), math.log(sigmoid(BETA * -2.0))])
  np.testing.assert_allclose(losses.npo_loss(nll, ref, BETA), npo, rtol=1e-6)
  # At the reference model every margin is 0: (2 / beta) log 2, whatever the sequences.
  np.testing.assert_allclose(losses.npo_loss(nll, nll, BETA), 2 / BETA * math.log(2), rtol=1e-6)
  idk, ref_idk = jnp.asarray([4.0, 1.0]), jnp.asarray([4.5, 2.0])
  # DPO margin: (S(f) - S(i)) - (S_ref(f) - S_ref(i)) = (3 - 4) - (2 - 4.5) = 1.5 and
  # (5 - 1) - (7 - 2) = -1; a larger NLL of the true answer lowers the loss.
  dpo = -2 / BETA * np.mean([math.log(sigmoid(BETA * 1.5)), math.log(sigmoid(BETA * -1.0))])
  np.testing.assert_allclose(losses.dpo_loss(nll, idk, ref, ref_idk, BETA), dpo, rtol=1e-6)
  np.testing.assert_allclose(
    losses.dpo_loss(nll, idk, nll, idk, BETA), 2 / BETA * math.log(2), rtol=1e-6
  )
  # AP prefers the true answer: margin S(i) - S(r) = 1 and -4.
  ap = -1 / BETA * np.mean([math.log(sigmoid(BETA * 1.0)), math.log(sigmoid(BETA * -4.0))])
  np.testing.assert_allclose(losses.preference_loss(nll, idk, BETA), ap, rtol=1e-6)


def test_me_is_the_kl_from_uniform_on_answer_positions_only():
  vocab = 4
  logits = np.zeros((1, 3, vocab))
  logits[0, 0] = [2.0, 0.0, 0.0, -1.0]  # predicts the counted label at position 1
  logits[0, 1] = [9.0, 0.0, 0.0, 0.0]  # predicts an ignored label: must not count
  labels = jnp.asarray([[IGNORE, 3, IGNORE]])
  p = np.exp(_log_softmax(logits[0, 0]))
  expected = np.sum(1 / vocab * (math.log(1 / vocab) - np.log(p + 1e-12)))
  np.testing.assert_allclose(losses.uniform_kl(jnp.asarray(logits), labels), expected, rtol=1e-5)
  # A uniform prediction is the minimum, 0.
  np.testing.assert_allclose(losses.uniform_kl(jnp.zeros((1, 3, vocab)), labels), 0.0, atol=1e-6)


def test_kl_to_the_reference_averages_over_every_position_padding_included():
  rng = np.random.default_rng(0)
  ref = rng.normal(size=(2, 3, 5))
  logits = ref.copy()
  logits[1, 2] += [3.0, 0.0, -1.0, 0.0, 2.0]  # one (say, padding) position differs
  log_p, log_r = _log_softmax(logits[1, 2]), _log_softmax(ref[1, 2])
  expected = np.sum(np.exp(log_r) * (log_r - log_p)) / 6  # batchmean over B * T = 6 rows
  np.testing.assert_allclose(
    losses.reference_kl(jnp.asarray(logits), jnp.asarray(ref)), expected, rtol=1e-5
  )
  np.testing.assert_allclose(losses.reference_kl(jnp.asarray(ref), jnp.asarray(ref)), 0, atol=1e-6)


class _Fixed:
  """A stand-in model with fixed logits per input row (the first token picks them)."""

  def __init__(self, table):
    self.table = table

  def __call__(self, input_ids):
    return jnp.asarray(self.table)[input_ids[:, 0]], None


def test_the_stream_losses_pick_the_right_sequences(monkeypatch):
  # Two "sequences": row 0 (the true answer) and row 1 (the IDK answer), distinct logits.
  rng = np.random.default_rng(1)
  table = rng.normal(size=(2, 3, 5))
  monkeypatch.setattr(losses.nnx, "merge", lambda graphdef, params, state: _Fixed(params))
  batch = {
    "input_ids": jnp.zeros((1, 3), jnp.int32),
    "labels": jnp.asarray([[IGNORE, 2, 4]]),
    "idk_input_ids": jnp.ones((1, 3), jnp.int32),
    "idk_labels": jnp.asarray([[IGNORE, 1, IGNORE]]),
    "ref_nll": jnp.asarray([1.0]),
    "ref_idk_nll": jnp.asarray([2.0]),
  }
  true_logits, idk_logits = table[None, 0], table[None, 1]
  s_true = float(losses.sequence_nll(jnp.asarray(true_logits), batch["labels"])[0])
  s_idk = float(losses.sequence_nll(jnp.asarray(idk_logits), batch["idk_labels"])[0])
  mean_true = float(losses.mean_token_nll(jnp.asarray(true_logits), batch["labels"]))
  expected = {
    "GA": -mean_true,
    "IDK": s_idk,  # one counted token: the mean is the sum
    "NPO": float(losses.npo_loss(jnp.asarray([s_true]), batch["ref_nll"], BETA)),
    "DPO": float(
      losses.dpo_loss(
        jnp.asarray([s_true]), jnp.asarray([s_idk]), batch["ref_nll"], batch["ref_idk_nll"], BETA
      )
    ),
    "ME": float(losses.uniform_kl(jnp.asarray(true_logits), batch["labels"])),
  }
  for kind, value in expected.items():
    loss = losses.forget_loss(kind, None, BETA)(table, None, batch, None)
    np.testing.assert_allclose(loss, value, rtol=1e-5, err_msg=kind)
  ref_table = table + 0.5 * rng.normal(size=table.shape)
  retain = {
    "GD": mean_true,
    "AP": float(losses.preference_loss(jnp.asarray([s_true]), jnp.asarray([s_idk]), BETA)),
    "KL": float(losses.reference_kl(jnp.asarray(true_logits), jnp.asarray(ref_table[None, 0]))),
  }
  for kind, value in retain.items():
    loss = losses.retain_loss(kind, None, BETA)(table, None, batch, ref_table)
    np.testing.assert_allclose(loss, value, rtol=1e-5, err_msg=kind)
  with pytest.raises(ValueError, match="Unknown forget loss 'SimNPO'"):
    losses.forget_loss("SimNPO", None)
