"""Tests for the training loop, its learning-rate schedule and the Orbax checkpoints."""

import math
import re

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dualoptim_jax as dj
from dualoptim_jax import checkpoint
from dualoptim_jax import train
from dualoptim_jax.data import ArrayDataset
from dualoptim_jax.models import ResNet18
from dualoptim_jax.unlearn.steps import TrainState, init_state


@pytest.fixture(scope="module")
def model():
  # The "rbg" key compiles its random ops far faster on CPU than the default threefry. Training
  # leaves the model unchanged, so the tests share it.
  rngs = nnx.Rngs(jax.random.key(0, impl="rbg"))
  return ResNet18(2, width=4, mean=(0.5,), std=(0.25,), rngs=rngs)


class _Tiny(nnx.Module):
  """A model with parameters and batch statistics, quick to build."""

  def __init__(self, rngs):
    self.linear = nnx.Linear(3, 4, rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)


def _halves(n=48, seed=0):
  """Noise images whose left (label 0) or right (label 1) half is bright."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 2
  images = rng.integers(0, 80, size=(n, 32, 32, 1))
  images[labels == 0, :, :16] += 150
  images[labels == 1, :, 16:] += 150
  return ArrayDataset(images.astype(np.uint8), labels, 2, (0.5,), (0.25,), "halves")


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    assert np.array_equal(x, y)


def test_cosine_epoch_schedule_is_constant_within_each_epoch():
  schedule = train.cosine_epoch_schedule(0.1, epochs=4, steps_per_epoch=3)
  per_epoch = [0.1, 0.0853553, 0.05, 0.0146447]
  for step in range(12):
    np.testing.assert_allclose(schedule(jnp.int32(step)), per_epoch[step // 3], rtol=1e-5)
  # fashion_mnist_small: 30 epochs from 0.1.
  schedule = train.cosine_epoch_schedule(0.1, epochs=30, steps_per_epoch=7)
  expected = 0.1 * (1 + math.cos(math.pi * 10 / 30)) / 2
  np.testing.assert_allclose(schedule(jnp.int32(70)), expected, rtol=1e-6)
  np.testing.assert_allclose(schedule(jnp.int32(76)), expected, rtol=1e-6)


def test_cosine_epoch_schedule_rejects_empty_runs():
  with pytest.raises(ValueError, match="positive"):
    train.cosine_epoch_schedule(0.1, epochs=0, steps_per_epoch=3)


@pytest.mark.parametrize(
    "make_tx, objectives",
    [(lambda: dj.sgd_l2(0.1), [None]), (lambda: dj.dualoptim(1e-3, 1e-2), ["forget", "retain"])],
    ids=["sgd_l2", "dualoptim"],
)
def test_checkpoint_round_trip_keeps_values_and_types(tmp_path, make_tx, objectives):
  tx = make_tx()
  _, state = init_state(_Tiny(nnx.Rngs(jax.random.key(0, impl="rbg"))), tx)
  opt_state = state.opt_state
  for i, objective in enumerate(objectives):
    grads = jax.tree.map(lambda p: p + i + 1.0, state.params)
    extra = {} if objective is None else {"objective": objective}
    _, opt_state = tx.update(grads, opt_state, state.params, **extra)
  state = state._replace(opt_state=opt_state)

  checkpoint.save(tmp_path, 3, state, metadata={"epoch": 3})
  for target in (state, jax.eval_shape(lambda: state)):
    restored = checkpoint.restore(tmp_path, target)
    assert type(restored) is TrainState
    assert type(restored.params) is nnx.State
    assert type(restored.opt_state) is type(state.opt_state)
    _assert_trees_equal(restored, state)
  assert checkpoint.latest_step(tmp_path) == 3
  assert checkpoint.read_metadata(tmp_path) == {"epoch": 3}


def test_checkpoint_keeps_the_latest_steps_and_survives_a_failed_save(tmp_path):
  for step in range(1, 4):
    checkpoint.save(tmp_path, step, {"x": jnp.full(3, step)}, max_to_keep=2)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "3"]
  with pytest.raises(ValueError):
    checkpoint.save(tmp_path, 4, {"x": object()}, max_to_keep=1)
  assert checkpoint.latest_step(tmp_path) == 3
  np.testing.assert_array_equal(checkpoint.restore(tmp_path, {"x": jnp.zeros(3, int)})["x"], 3)
  with pytest.raises(ValueError, match="steps must increase"):
    checkpoint.save(tmp_path, 3, {"x": jnp.zeros(3)})


def test_restore_without_checkpoints_names_the_directory(tmp_path):
  assert checkpoint.latest_step(tmp_path / "missing") is None
  assert not (tmp_path / "missing").exists()
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
    checkpoint.restore(tmp_path, {"x": jnp.zeros(3)})
  checkpoint.save(tmp_path, 1, {"x": jnp.zeros(3)})
  with pytest.raises(FileNotFoundError, match="step 2"):
    checkpoint.restore(tmp_path, {"x": jnp.zeros(3)}, step=2)


def test_resumed_training_is_bit_identical(model, tmp_path, monkeypatch):
  data = _halves()
  kwargs = dict(batch_size=16, lr=0.05, seed=3, augment=True, progress=False)
  _, straight = train.train_classifier(model, data, epochs=2, **kwargs)

  steps = []
  make_step = train.make_step

  def counting_make_step(*args, **kw):
    step = make_step(*args, **kw)
    return lambda *a, **k: steps.append(1) or step(*a, **k)

  monkeypatch.setattr(train, "make_step", counting_make_step)
  train.train_classifier(model, data, epochs=1, checkpoint_dir=tmp_path, **kwargs)
  assert (len(steps), checkpoint.latest_step(tmp_path)) == (3, 1)

  _, resumed = train.train_classifier(model, data, epochs=2, checkpoint_dir=tmp_path, **kwargs)
  assert (len(steps), checkpoint.latest_step(tmp_path)) == (6, 2)  # one more epoch, not two
  _assert_trees_equal(resumed, straight)
  first, second = (checkpoint.read_metadata(tmp_path, step) for step in (1, 2))
  assert second["epoch"] == 2
  # The training time adds up over sittings.
  assert first["total_seconds"] == first["seconds"] > 0
  assert second["total_seconds"] == pytest.approx(first["seconds"] + second["seconds"])

  _, again = train.train_classifier(model, data, epochs=2, checkpoint_dir=tmp_path, **kwargs)
  assert len(steps) == 6
  _assert_trees_equal(again, straight)

  with pytest.raises(ValueError, match="epoch 2"):
    train.train_classifier(model, data, epochs=1, checkpoint_dir=tmp_path, **kwargs)
  # Checkpoints of other hyper-parameters are refused, not resumed.
  with pytest.raises(ValueError, match="other hyper-parameters"):
    train.train_classifier(model, data, epochs=3, checkpoint_dir=tmp_path, **{**kwargs, "lr": 0.1})


def test_a_small_model_learns_a_separable_task(model):
  data = _halves(n=64, seed=1)
  graphdef, state = init_state(model, dj.sgd_l2(0.0))
  before = train.evaluate_accuracy(graphdef, state, data, batch_size=48)
  graphdef, state = train.train_classifier(model, data, epochs=4, batch_size=16, lr=0.05)
  after = train.evaluate_accuracy(graphdef, state, data, batch_size=48)
  assert before < 75 and after > 90, (before, after)
