"""The task-agnostic step and host loop, on a linear model with a hand-computable update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dualoptim_jax as dj
from dualoptim_jax.core import TrainState, checkpoint, make_step, run_schedule, train_epochs

X = jnp.array([[1.0, 2.0], [3.0, -1.0]])
Y = jnp.array([1.0, 0.0])


def squared_error(params, calls, batch, rng, extras):
  """0.5 * scale * mean((x w - y)^2); the model state counts calls; reports the key it got."""
  x, y = batch
  scale = 1.0 if extras is None else extras["scale"]
  loss = 0.5 * scale * jnp.mean((x @ params["w"] - y) ** 2)
  return loss, (calls + 1, {"key": rng})


def grad_of(w, scale=1.0):
  """d/dw of the loss above: scale * x^T (x w - y) / n."""
  return scale * X.T @ (X @ w - Y) / len(Y)


def new_state(tx, w=(0.5, -0.5)):
  params = {"w": jnp.array(w)}
  return TrainState(params, jnp.int32(0), tx.init(params), jax.random.PRNGKey(0))


def test_a_step_is_one_optimizer_update_of_the_loss_gradient():
  step = make_step(optax.sgd(0.1), squared_error)
  state = new_state(optax.sgd(0.1))
  w0 = np.array(state.params["w"])  # a copy: a view would keep the buffer from being donated
  new, metrics = step(state, (X, Y))
  np.testing.assert_allclose(new.params["w"], w0 - 0.1 * grad_of(w0), rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], 0.5 * np.mean((X @ w0 - Y) ** 2), rtol=1e-6)
  assert int(new.model_state) == 1  # the loss's model state is the new one
  assert state.params["w"].is_deleted()  # the state is donated


def test_masks_extras_and_one_compilation_per_objective():
  tx = dj.dual_transform({"forget": optax.sgd(0.1), "retain": optax.sgd(1.0)})
  step = make_step(tx, {"forget": squared_error, "retain": squared_error})
  state = new_state(tx)
  w0 = np.asarray(state.params["w"])
  mask = {"w": jnp.array([1.0, 0.0])}
  state, _ = step(state, (X, Y), objective="forget", mask=mask, extras={"scale": 2.0})
  expected = w0 - 0.1 * np.asarray(grad_of(w0, 2.0)) * [1.0, 0.0]
  np.testing.assert_allclose(state.params["w"], expected, rtol=1e-6)
  w1 = np.asarray(state.params["w"])
  state, _ = step(state, (X, Y), objective="retain", mask=mask, extras={"scale": 3.0})
  np.testing.assert_allclose(
    state.params["w"], w1 - 1.0 * np.asarray(grad_of(w1, 3.0)) * [1, 0], rtol=1e-6
  )
  # New extras values and new batches do not recompile: one compilation per objective.
  for objective in ("forget", "retain"):
    state, _ = step(
      state, (X[::-1], Y[::-1]), objective=objective, mask=mask, extras={"scale": 0.5}
    )
  assert step._cache_size() == 2
  assert int(optax.tree.get(state.opt_state, "count")) == 4  # the global count, by name


def test_every_step_gets_a_fresh_key():
  step = make_step(optax.sgd(0.0), squared_error)
  state = new_state(optax.sgd(0.0))
  keys = []
  for _ in range(3):
    state, metrics = step(state, (X, Y))
    keys.append(tuple(np.asarray(metrics["key"]).tolist()))
  assert len(set(keys)) == 3
  first = jax.random.split(jax.random.PRNGKey(0))[1]
  assert keys[0] == tuple(np.asarray(first).tolist())


def test_run_schedule_runs_each_objective_with_its_batch_mask_and_extras():
  tx = dj.dual_transform({"forget": optax.sgd(0.1), "retain": optax.sgd(0.1)})
  calls = []
  step = make_step(tx, {"forget": squared_error, "retain": squared_error})
  schedule = dj.alternating(1, 2, 6)  # F R R F R R
  batches = {"forget": (X, Y), "retain": (X[::-1], Y[::-1])}
  masks = {"forget": {"w": jnp.array([0.0, 1.0])}}

  def extras(objective, t):
    calls.append((objective, t))
    return {"scale": float(t + 1)}

  seen = []
  final = run_schedule(
    new_state(tx),
    schedule,
    step,
    batches.__getitem__,
    masks=masks,
    extras=extras,
    after_step=lambda t, s: seen.append(t),
  )
  assert calls == [
    ("forget", 0),
    ("retain", 1),
    ("retain", 2),
    ("forget", 3),
    ("retain", 4),
    ("retain", 5),
  ]
  assert seen == list(range(6)) and int(final.model_state) == 6

  # The same updates by hand.
  w = np.array([0.5, -0.5])
  for t, objective in enumerate(schedule):
    x, y = batches[objective]
    g = (t + 1) * x.T @ (x @ w - y) / len(y)
    w = w - 0.1 * np.asarray(g) * (np.array([0.0, 1.0]) if objective == "forget" else 1.0)
  np.testing.assert_allclose(final.params["w"], w, rtol=1e-5)


def test_an_unknown_objective_is_refused():
  tx = dj.dual_transform({"forget": optax.sgd(0.1), "retain": optax.sgd(0.1)})
  step = make_step(tx, {"forget": squared_error, "retain": squared_error})
  with pytest.raises(KeyError, match="retian"):
    step(new_state(tx), (X, Y), objective="retian")


def test_train_epochs_goes_on_until_the_condition_holds_and_resumes_there(tmp_path):
  step = make_step(optax.sgd(0.1), squared_error)

  def batches(epoch):
    return [(X, Y)] * 3  # three steps an epoch; the model state counts the steps

  def run(epochs, until=None, max_epochs=None, directory=None):
    return train_epochs(
      new_state(optax.sgd(0.1)),
      step,
      batches,
      epochs=epochs,
      steps_per_epoch=3,
      hyperparameters={"lr": 0.1},
      checkpoint_dir=directory,
      until=until,
      max_epochs=max_epochs,
      progress=False,
    )

  assert int(run(2).model_state) == 6
  checks = []

  def after_five_epochs(state):
    checks.append(int(state.model_state))
    return int(state.model_state) >= 15

  assert int(run(2, after_five_epochs, 10).model_state) == 15
  assert checks == [6, 9, 12, 15]  # checked after epoch 2 (the schedule's end), then each epoch
  assert int(run(2, lambda s: False, 4).model_state) == 12  # never true: stops at max_epochs
  # Resumed from a checkpoint past `epochs`, it checks the condition before training on.
  run(2, lambda s: int(s.model_state) >= 9, 10, tmp_path)
  assert checkpoint.latest_step(tmp_path) == 3
  assert int(run(2, lambda s: True, 10, tmp_path).model_state) == 9
  with pytest.raises(ValueError, match="past the 2 epochs"):
    run(2, None, None, tmp_path)
  with pytest.raises(ValueError, match="epochs <= max_epochs"):
    run(3, None, 2)
