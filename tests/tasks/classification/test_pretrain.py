"""Pretraining: its learning-rate schedule, checkpointed resumption and a task it must learn."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dualoptim_jax as dj
from dualoptim_jax.core import checkpoint, init_state
from dualoptim_jax.data import ArrayDataset, eval_batches
from dualoptim_jax.models import ResNet18
from dualoptim_jax.tasks.classification import pretrain as train
from dualoptim_jax.tasks.classification.metrics import accuracy, predict, predict_logits

from helpers import assert_trees_equal


@pytest.fixture(scope="module")
def model():
  # The "rbg" key compiles its random ops far faster on CPU than the default threefry. Training
  # leaves the model unchanged, so the tests share it.
  rngs = nnx.Rngs(jax.random.key(0, impl="rbg"))
  return ResNet18(2, width=4, mean=(0.5,), std=(0.25,), rngs=rngs)


def _halves(n=48, seed=0):
  """Noise images whose left (label 0) or right (label 1) half is bright."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 2
  images = rng.integers(0, 80, size=(n, 32, 32, 1))
  images[labels == 0, :, :16] += 150
  images[labels == 1, :, 16:] += 150
  return ArrayDataset(images.astype(np.uint8), labels, 2, (0.5,), (0.25,), "halves")


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


def test_the_reference_schedule_has_a_20_epoch_period():
  schedule = train.reference_epoch_schedule(0.1, steps_per_epoch=5)
  # 0 in epoch 0, the peak at 10, 0 again at 20, near the peak in the last of 30 epochs.
  for epoch, lr in ((0, 0.0), (5, 0.05), (10, 0.1), (20, 0.0), (29, 0.1 * (1 + 0.9510565) / 2)):
    for step in (5 * epoch, 5 * epoch + 4):
      np.testing.assert_allclose(schedule(jnp.int32(step)), lr, rtol=1e-5, atol=1e-9)
  with pytest.raises(ValueError, match="Unknown schedule 'linear'"):
    train.train_classifier(None, _halves(), epochs=1, schedule="linear")


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
  assert_trees_equal(resumed, straight)
  first, second = (checkpoint.read_metadata(tmp_path, step) for step in (1, 2))
  assert second["epoch"] == 2
  # The training time adds up over sittings.
  assert first["total_seconds"] == first["seconds"] > 0
  assert second["total_seconds"] == pytest.approx(first["seconds"] + second["seconds"])

  _, again = train.train_classifier(model, data, epochs=2, checkpoint_dir=tmp_path, **kwargs)
  assert len(steps) == 6
  assert_trees_equal(again, straight)

  with pytest.raises(ValueError, match="epoch 2"):
    train.train_classifier(model, data, epochs=1, checkpoint_dir=tmp_path, **kwargs)
  # Checkpoints of other hyper-parameters are refused, not resumed.
  with pytest.raises(ValueError, match="other hyper-parameters"):
    train.train_classifier(model, data, epochs=3, checkpoint_dir=tmp_path, **{**kwargs, "lr": 0.1})


def test_a_checkpoint_of_the_earlier_train_state_layout_resumes(model, tmp_path):
  """Checkpoints saved as (params, batch_stats, opt_state), before the train state had a model
  state and a key, resume to the same model as a straight run."""
  data = _halves()
  kwargs = dict(batch_size=16, lr=0.05, seed=3, progress=False)
  _, straight = train.train_classifier(model, data, epochs=2, **kwargs)
  _, first = train.train_classifier(
    model, data, epochs=1, checkpoint_dir=tmp_path / "new", **kwargs
  )
  earlier = {"params": first.params, "batch_stats": first.model_state, "opt_state": first.opt_state}
  metadata = checkpoint.read_metadata(tmp_path / "new")
  checkpoint.save(tmp_path / "earlier", 1, earlier, metadata=metadata)
  _, resumed = train.train_classifier(
    model, data, epochs=2, checkpoint_dir=tmp_path / "earlier", **kwargs
  )
  # The earlier layout has no key: the resumed run starts from the fresh one, all else is equal.
  assert_trees_equal(resumed._replace(rng=None), straight._replace(rng=None))
  # A checkpoint of another model is still refused, with the error of the current layout.
  checkpoint.save(tmp_path / "other", 1, {"w": jnp.zeros(3)}, metadata=metadata)
  with pytest.raises(ValueError, match="tree structures do not match"):
    train.train_classifier(model, data, epochs=2, checkpoint_dir=tmp_path / "other", **kwargs)


def test_training_resumes_from_the_newest_intact_epoch(model, tmp_path, capsys):
  """A truncated array file in the latest epoch's checkpoint: one line, the epoch before it is
  resumed, the damaged one is kept aside, and the result is that of a straight run."""
  data = _halves()
  kwargs = dict(batch_size=16, lr=0.05, seed=3, progress=False)
  _, straight = train.train_classifier(model, data, epochs=3, **kwargs)
  train.train_classifier(model, data, epochs=2, checkpoint_dir=tmp_path, **kwargs)
  largest = max((tmp_path / "2").rglob("d/*"), key=lambda p: p.stat().st_size)
  largest.write_bytes(largest.read_bytes()[:16])
  capsys.readouterr()
  _, resumed = train.train_classifier(model, data, epochs=3, checkpoint_dir=tmp_path, **kwargs)
  err = [line for line in capsys.readouterr().err.splitlines() if "cannot be read" in line]
  assert len(err) == 1 and "step 2" in err[0]
  assert_trees_equal(resumed, straight)
  assert (tmp_path / "2.unreadable").is_dir() and checkpoint.latest_step(tmp_path) == 3


def _accuracy(graphdef, state, data):
  logits, labels = predict_logits(
    lambda x: predict(graphdef, state.params, state.model_state, x), eval_batches(data, 48)
  )
  return accuracy(logits, labels)


def test_a_small_model_learns_a_separable_task(model):
  data = _halves(n=64, seed=1)
  graphdef, state = init_state(model, dj.sgd_l2(0.0))
  before = _accuracy(graphdef, state, data)
  graphdef, state = train.train_classifier(model, data, epochs=4, batch_size=16, lr=0.05)
  after = _accuracy(graphdef, state, data)
  assert before < 75 and after > 90, (before, after)
