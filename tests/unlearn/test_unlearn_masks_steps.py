import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dualoptim_jax as dj
from dualoptim_jax.data import make_split, to_float
from dualoptim_jax.models import apply
from dualoptim_jax.unlearn import TrainState, fisher_mask, make_step, salun_mask
from dualoptim_jax.unlearn.losses import cross_entropy
from dualoptim_jax.unlearn.methods import sfron_iteration


def full_grad(graphdef, state, data, sign=1.0):
  """Eval-mode gradient of the mean CE over a whole set (independent of batching)."""
  def f(params):
    logits, _ = apply(graphdef, params, state.batch_stats, to_float(data.images), train=False)
    return sign * cross_entropy(logits, data.labels)
  return jax.grad(f)(state.params)


def test_salun_mask_keeps_the_top_half_by_saliency(problem):
  graphdef, original, _, split = problem  # 40 forget, 360 retain: batches of 40 cover each once
  mask = salun_mask(graphdef, original, split.forget, split.retain, ratio=0.5, batch_size=40)
  g_f = full_grad(graphdef, original, split.forget, -1.0)
  g_r = full_grad(graphdef, original, split.retain, -1.0)
  saliency = np.concatenate([np.ravel(np.abs(f) - np.abs(r)) for f, r in
                             zip(jax.tree.leaves(g_f), jax.tree.leaves(g_r))])
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
  expected = jax.tree.map(lambda a, b: ((a + 1e-15) / (b + 1e-15) >= 1).astype(np.float32),
                          f_f, f_r)
  agree = [np.mean(np.asarray(m) == np.asarray(e)) for m, e in
           zip(jax.tree.leaves(mask), jax.tree.leaves(expected))]
  assert min(agree) > 0.999  # float32 summation order may flip near-ties


def test_masked_weights_get_only_the_weight_decay(problem):
  graphdef, original, _, split = problem
  tx = dj.shared_sgd(0.1, 0.1, weight_decay=0.01)
  copy = lambda t: jax.tree.map(jnp.array, t)  # noqa: E731
  state = TrainState(copy(original.params), copy(original.batch_stats), tx.init(original.params))
  mask = jax.tree.map(lambda p: (jnp.arange(p.size).reshape(p.shape) % 2).astype(jnp.float32),
                      original.params)
  step = make_step(graphdef, tx, cross_entropy, objective="retain")
  images, labels = to_float(split.retain.images[:32]), split.retain.labels[:32]
  new, _ = step(state, images, labels, mask)
  for p0, p1, m in zip(jax.tree.leaves(original.params), jax.tree.leaves(new.params),
                       jax.tree.leaves(mask)):
    masked = np.asarray(m) == 0
    np.testing.assert_allclose(np.asarray(p1)[masked], np.asarray(p0)[masked] * (1 - 0.1 * 0.01),
                               rtol=1e-6)
  # A second call with new data does not recompile.
  step(new, images[::-1], labels[::-1], mask)
  assert step._cache_size() == 1


def test_sfron_iteration_of_each_step_count():
  # Iterations 0..9 with period 5: updates F R R R R R F R R R R R -> iterations 0 0 1 2 3 4 5 5 ...
  shared = [int(sfron_iteration(jnp.int32(c), 5, None)) for c in range(12)]
  assert shared == [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]
  assert [int(sfron_iteration(c, 5, "forget")) for c in range(3)] == [0, 5, 10]
  assert [int(sfron_iteration(c, 5, "retain")) for c in range(3)] == [0, 1, 2]


def test_unknown_method_or_optimizer(problem):
  graphdef, original, _, split = problem
  with pytest.raises(ValueError, match="SalUn"):
    dj.unlearn.unlearn("Salun", "dual", graphdef, original, split, dj.unlearn.UnlearnConfig())
  with pytest.raises(ValueError, match="dual"):
    dj.unlearn.unlearn("RL", "duel", graphdef, original, split, dj.unlearn.UnlearnConfig())


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("batch_size", -1), ("forget_lr", -1e-4), ("retain_lr", 0.0),
    ("sfron_freq", 0), ("sfron_iters", 0), ("sfron_max_norm", 0.0), ("salun_ratio", 1.5)])
def test_unlearn_config_rejects_bad_values(field, value):
  with pytest.raises(ValueError, match=f"UnlearnConfig.{field}"):
    dj.unlearn.UnlearnConfig(**{field: value})


def test_make_optimizer_learning_rates_and_decays_follow_the_reference():
  from dualoptim_jax.unlearn import UnlearnConfig
  from dualoptim_jax.unlearn.methods import make_optimizer

  config = UnlearnConfig(forget_lr=0.02, retain_lr=0.01)
  params, zero = {"w": jnp.ones(3)}, {"w": jnp.zeros(3)}

  def decay_step(tx, objective, state=None):
    """With zero gradients the first update is -lr * wd * theta: it reveals lr * wd."""
    state = tx.init(params) if state is None else state
    updates, state = tx.update(zero, state, params, objective=objective)
    return float(-updates["w"][0]), state

  # Shared SGD: RL switches the lr per phase; FT never switches, so it retains at the forget lr.
  assert decay_step(make_optimizer("sgd", "RL", config), "retain")[0] == pytest.approx(0.01 * 5e-4)
  assert decay_step(make_optimizer("sgd", "RL", config), "forget")[0] == pytest.approx(0.02 * 5e-4)
  assert decay_step(make_optimizer("sgd", "FT", config), "retain")[0] == pytest.approx(0.02 * 5e-4)
  assert decay_step(make_optimizer("dual", "FT", config), "retain")[0] == pytest.approx(0.01 * 5e-4)
  # SFRon, shared AdamW: retain_lr for both objectives and weight decay 0.05, cosine at iteration 0.
  tx = make_optimizer("adam", "SFRon", config, total_iters=10)
  assert decay_step(tx, "forget")[0] == pytest.approx(0.01 * 0.05, rel=1e-5)
  # SFRon, dual: the forget lr follows the cosine of the iteration (forget step j is iteration 5j).
  tx = make_optimizer("dual", "SFRon", config, total_iters=10)
  _, state = decay_step(tx, "forget")
  second, _ = decay_step(tx, "forget", state)  # iteration 5 of 10: lr = 0.02 * (1 + cos(pi/2)) / 2
  assert second == pytest.approx(0.01 * 0.05, rel=1e-5)
  # SFRon clips forget gradients to global norm 7 before the optimizer; retain ones are not clipped.
  big = {"w": jnp.full(3, 40.0)}
  _, state = tx.update(big, tx.init(params), params, objective="forget")
  mu = state[1].inner_states["forget"][0].mu["w"]
  np.testing.assert_allclose(mu, 0.1 * 7.0 / np.sqrt(3), rtol=1e-5)
  _, state = tx.update(big, tx.init(params), params, objective="retain")
  trace = state[1].inner_states["retain"][1][0].trace["w"]
  np.testing.assert_allclose(trace, 40.0 + 5e-4, rtol=1e-6)
