"""Gradient masks, the classification loss over a model, and each method's own pieces."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dualoptim_jax as dj
from dualoptim_jax.core import TrainState, make_step
from dualoptim_jax.data import to_float
from dualoptim_jax.models import apply
from dualoptim_jax.tasks.classification import (
  METHODS,
  SCRUB,
  SalUn,
  SFRon,
  UnlearnConfig,
  fisher_mask,
  salun_mask,
  unlearn,
)
from dualoptim_jax.tasks.classification.losses import classifier_loss, cross_entropy


def full_grad(graphdef, state, data, sign=1.0):
  """Eval-mode gradient of the mean CE over a whole set (independent of batching)."""

  def f(params):
    logits, _ = apply(graphdef, params, state.model_state, to_float(data.images), train=False)
    return sign * cross_entropy(logits, data.labels)

  return jax.grad(f)(state.params)


def test_salun_mask_keeps_the_top_half_by_saliency(problem):
  graphdef, original, _, split = problem  # 40 forget, 360 retain: batches of 40 cover each once
  mask = salun_mask(graphdef, original, split.forget, split.retain, ratio=0.5, batch_size=40)
  g_f = full_grad(graphdef, original, split.forget, -1.0)
  g_r = full_grad(graphdef, original, split.retain, -1.0)
  saliency = np.concatenate(
    [
      np.ravel(np.abs(f) - np.abs(r))
      for f, r in zip(jax.tree.leaves(g_f), jax.tree.leaves(g_r), strict=True)
    ]
  )
  kept = np.concatenate([np.ravel(m) for m in jax.tree.leaves(mask)])
  assert kept.sum() == int(0.5 * kept.size)
  assert saliency[kept == 1].min() >= saliency[kept == 0].max() - 1e-6
  assert jax.tree.structure(mask) == jax.tree.structure(original.params)


def test_fisher_mask_is_the_ratio_of_squared_gradients(problem):
  graphdef, original, _, split = problem
  forget = split.forget
  retain = split.retain.subset(np.arange(40))  # one batch each: F = (full gradient)^2
  mask = fisher_mask(graphdef, original, forget, retain, batch_size=40)
  f_f = jax.tree.map(jnp.square, full_grad(graphdef, original, forget))
  f_r = jax.tree.map(jnp.square, full_grad(graphdef, original, retain))
  expected = jax.tree.map(
    lambda a, b: ((a + 1e-15) / (b + 1e-15) >= 1).astype(np.float32), f_f, f_r
  )
  agree = [
    np.mean(np.asarray(m) == np.asarray(e))
    for m, e in zip(jax.tree.leaves(mask), jax.tree.leaves(expected), strict=True)
  ]
  assert min(agree) > 0.999  # float32 summation order may flip near-ties


def _copy(state, tx):
  copy = lambda t: jax.tree.map(jnp.array, t)  # noqa: E731
  return TrainState(
    copy(state.params), copy(state.model_state), tx.init(state.params), jax.random.PRNGKey(0)
  )


def test_masked_weights_get_only_the_weight_decay(problem):
  graphdef, original, _, split = problem
  tx = dj.shared_sgd(0.1, 0.1, weight_decay=0.01)
  state = _copy(original, tx)
  mask = jax.tree.map(
    lambda p: (jnp.arange(p.size).reshape(p.shape) % 2).astype(jnp.float32), original.params
  )
  step = make_step(tx, {"retain": classifier_loss(graphdef, cross_entropy)})
  batch = to_float(split.retain.images[:32]), split.retain.labels[:32]
  new, metrics = step(state, batch, objective="retain", mask=mask)
  for p0, p1, m in zip(
    jax.tree.leaves(original.params),
    jax.tree.leaves(new.params),
    jax.tree.leaves(mask),
    strict=True,
  ):
    masked = np.asarray(m) == 0
    np.testing.assert_allclose(
      np.asarray(p1)[masked], np.asarray(p0)[masked] * (1 - 0.1 * 0.01), rtol=1e-6
    )
  np.testing.assert_allclose(
    metrics["loss"],
    cross_entropy(
      apply(graphdef, original.params, original.model_state, batch[0], train=True)[0], batch[1]
    ),
    rtol=1e-6,
  )


def test_scrub_compares_the_student_with_the_original_model_in_train_mode(problem):
  """SCRUB's retain loss is gamma * CE + alpha * KL(teacher || student) and its forget loss -KL,
  the teacher being the original model's train-mode logits, whatever the student's weights."""
  graphdef, original, _, split = problem
  scrub = SCRUB(gamma=2.0, alpha=3.0)
  batch = to_float(split.retain.images[:32]), split.retain.labels[:32]
  student = jax.tree.map(lambda p: 0.8 * p, original.params)
  schedule = scrub.schedule(split, UnlearnConfig(batch_size=32))

  def logits(params):
    return np.asarray(apply(graphdef, params, original.model_state, batch[0], train=True)[0])

  log_s = jax.nn.log_softmax(logits(student))
  log_t = jax.nn.log_softmax(logits(original.params))
  kl = float(np.sum(np.exp(log_t) * (log_t - log_s)) / 32)
  ce = float(-np.mean(log_s[np.arange(32), batch[1]]))
  assert kl > 1e-3  # the student differs from the teacher
  for objective, expected in (("retain", 2.0 * ce + 3.0 * kl), ("forget", -kl)):
    loss_fn = classifier_loss(graphdef, scrub.losses[objective])
    extras = scrub.extras(objective, 0, schedule, original)
    loss, _ = loss_fn(student, original.model_state, batch, None, extras)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_sfron_iteration_of_each_step_count():
  sfron = SFRon(freq=5)
  # Iterations 0..9 with period 5: updates F R R R R R F R R R R R -> iterations 0 0 1 2 3 4 5 5 ...
  shared = [int(sfron.iteration(jnp.int32(c), None)) for c in range(12)]
  assert shared == [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]
  assert [int(sfron.iteration(c, "forget")) for c in range(3)] == [0, 5, 10]
  assert [int(sfron.iteration(c, "retain")) for c in range(3)] == [0, 1, 2]


def test_sfron_schedule_and_forget_weight_follow_its_iterations(problem):
  _, original, _, split = problem
  sfron = SFRon(iters=12, freq=5, alpha=10.0)
  schedule = sfron.schedule(split, UnlearnConfig())
  # 12 iterations, a forget step at iterations 0, 5, 10: F R R R R R F R R R R R F R R.
  assert "".join(k[0].upper() for k in schedule) == "FRRRRRFRRRRRFRR"
  alphas = [sfron.extras("forget", t, schedule, original)["alpha"] for t in (0, 6, 12)]
  np.testing.assert_allclose(alphas, [10.0 * (1 + np.cos(np.pi * i / 12)) / 2 for i in (0, 5, 10)])
  assert sfron.extras("retain", 1, schedule, original) == {}
  # Without `iters`: epochs x retain batches (360 retain samples at batch 32 -> 12 per epoch).
  assert (
    SFRon().schedule(split, UnlearnConfig(epochs=2, batch_size=32)).steps_before(29, "retain") == 24
  )


def test_unknown_optimizer(problem):
  graphdef, original, _, split = problem
  with pytest.raises(ValueError, match="Unknown optimizer 'duel'"):
    unlearn(METHODS["RL"], "duel", graphdef, original, split, UnlearnConfig())


@pytest.mark.parametrize(
  "make, message",
  [
    (lambda: UnlearnConfig(epochs=0), "UnlearnConfig.epochs must be positive"),
    (lambda: UnlearnConfig(batch_size=-1), "UnlearnConfig.batch_size must be positive"),
    (lambda: UnlearnConfig(forget_lr=-1e-4), "UnlearnConfig.forget_lr must be positive"),
    (lambda: UnlearnConfig(retain_lr=0.0), "UnlearnConfig.retain_lr must be positive"),
    (lambda: SFRon(freq=0), "SFRon.freq must be positive"),
    (lambda: SFRon(iters=0), "SFRon.iters must be positive"),
    (lambda: SFRon(max_norm=0.0), "SFRon.max_norm must be positive"),
    (lambda: SalUn(ratio=1.5), r"SalUn.ratio must lie in \(0, 1\]"),
  ],
)
def test_bad_hyperparameters_are_refused(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_optimizer_learning_rates_and_decays_follow_the_reference():
  config = UnlearnConfig(forget_lr=0.02, retain_lr=0.01)
  params, zero = {"w": jnp.ones(3)}, {"w": jnp.zeros(3)}
  schedule = dj.alternating(1, 5, 12)  # SFRon: 10 iterations

  def decay_step(tx, objective, state=None):
    """With zero gradients the first update is -lr * wd * theta: it reveals lr * wd."""
    state = tx.init(params) if state is None else state
    updates, state = tx.update(zero, state, params, objective=objective)
    return float(-updates["w"][0]), state

  def optimizer(method, name):
    return METHODS[method].optimizer(name, config, schedule)

  # Shared SGD: RL switches the lr per phase; FT never switches, so it retains at the forget lr.
  assert decay_step(optimizer("RL", "sgd"), "retain")[0] == pytest.approx(0.01 * 5e-4)
  assert decay_step(optimizer("RL", "sgd"), "forget")[0] == pytest.approx(0.02 * 5e-4)
  assert decay_step(optimizer("FT", "sgd"), "retain")[0] == pytest.approx(0.02 * 5e-4)
  assert decay_step(optimizer("FT", "dual"), "retain")[0] == pytest.approx(0.01 * 5e-4)
  # SFRon, shared AdamW: retain_lr for both objectives and weight decay 0.05, cosine at iteration 0.
  tx = optimizer("SFRon", "adam")
  assert decay_step(tx, "forget")[0] == pytest.approx(0.01 * 0.05, rel=1e-5)
  # SFRon, dual: the forget lr follows the cosine of the iteration (forget step j is iteration 5j).
  tx = optimizer("SFRon", "dual")
  _, state = decay_step(tx, "forget")
  second, _ = decay_step(tx, "forget", state)  # iteration 5 of 10: lr = 0.02 * (1 + cos(pi/2)) / 2
  assert second == pytest.approx(0.01 * 0.05, rel=1e-5)
  # SFRon clips forget gradients to global norm 7 before the optimizer; retain ones are not clipped.
  big = {"w": jnp.full(3, 40.0)}
  _, state = tx.update(big, tx.init(params), params, objective="forget")
  mu = optax.tree.get(state, "mu")["w"]  # the only first moment: the forget AdamW's
  np.testing.assert_allclose(mu, 0.1 * 7.0 / np.sqrt(3), rtol=1e-5)
  _, state = tx.update(big, tx.init(params), params, objective="retain")
  trace = optax.tree.get(state, "trace")["w"]  # the only momentum: the retain SGD's
  np.testing.assert_allclose(trace, 40.0 + 5e-4, rtol=1e-6)
