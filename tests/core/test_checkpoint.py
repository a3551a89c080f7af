"""Orbax checkpoints of train states: round trips, kept steps, failed saves, clear errors."""

import re

import jax
import numpy as np
import pytest
from flax import nnx

import dualoptim_jax as dj
from dualoptim_jax.core import TrainState, checkpoint, init_state

from helpers import assert_trees_equal


class _Tiny(nnx.Module):
  """A model with parameters and batch statistics, quick to build."""

  def __init__(self, rngs):
    self.linear = nnx.Linear(3, 4, rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)


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
    grads = jax.tree.map(lambda p, i=i: p + i + 1.0, state.params)
    extra = {} if objective is None else {"objective": objective}
    _, opt_state = tx.update(grads, opt_state, state.params, **extra)
  state = state._replace(opt_state=opt_state)

  checkpoint.save(tmp_path, 3, state, metadata={"epoch": 3})
  for target in (state, jax.eval_shape(lambda: state)):
    restored = checkpoint.restore(tmp_path, target)
    assert type(restored) is TrainState
    assert type(restored.params) is nnx.State
    assert type(restored.opt_state) is type(state.opt_state)
    assert_trees_equal(restored, state)
  assert checkpoint.latest_step(tmp_path) == 3
  assert checkpoint.read_metadata(tmp_path) == {"epoch": 3}


def test_checkpoint_keeps_the_latest_steps_and_survives_a_failed_save(tmp_path):
  for step in range(1, 4):
    checkpoint.save(tmp_path, step, {"x": jax.numpy.full(3, step)}, max_to_keep=2)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "3"]
  with pytest.raises(ValueError, match="object"):
    checkpoint.save(tmp_path, 4, {"x": object()}, max_to_keep=1)
  assert checkpoint.latest_step(tmp_path) == 3
  np.testing.assert_array_equal(
    checkpoint.restore(tmp_path, {"x": jax.numpy.zeros(3, int)})["x"], 3
  )
  with pytest.raises(ValueError, match="steps must increase"):
    checkpoint.save(tmp_path, 3, {"x": jax.numpy.zeros(3)})


def test_restore_without_checkpoints_names_the_directory(tmp_path):
  assert checkpoint.latest_step(tmp_path / "missing") is None
  assert not (tmp_path / "missing").exists()
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
    checkpoint.restore(tmp_path, {"x": jax.numpy.zeros(3)})
  checkpoint.save(tmp_path, 1, {"x": jax.numpy.zeros(3)})
  with pytest.raises(FileNotFoundError, match="step 2"):
    checkpoint.restore(tmp_path, {"x": jax.numpy.zeros(3)}, step=2)


def _damage(step_dir, how):
  """Truncates an array file, empties the metadata file, or removes an array file."""
  arrays = sorted((step_dir / "state").rglob("d/*"), key=lambda p: p.stat().st_size)
  if how == "truncate":
    arrays[-1].write_bytes(arrays[-1].read_bytes()[:10])
  elif how == "empty metadata":
    (step_dir / "metadata" / "metadata").write_text("")
  else:
    arrays[-1].unlink()


@pytest.mark.parametrize("how", ["truncate", "empty metadata", "remove"])
def test_newest_readable_skips_a_damaged_step_in_one_line_and_keeps_it(tmp_path, capsys, how):
  target = {"x": jax.numpy.zeros(1000)}
  for step in (1, 2):
    checkpoint.save(tmp_path, step, {"x": jax.numpy.arange(1000.0) * step}, metadata={"s": step})
  _damage(tmp_path / "2", how)

  def read(step):
    return checkpoint.read_metadata(tmp_path, step), checkpoint.restore(tmp_path, target, step)

  step, (metadata, tree) = checkpoint.newest_readable(tmp_path, read)
  assert step == 1 and metadata == {"s": 1}
  np.testing.assert_array_equal(tree["x"], np.arange(1000.0))
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "step 2 cannot be read" in err[0] and str(tmp_path) in err[0]
  # Kept aside, not deleted; step 2 can be written anew.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2.unreadable"]
  checkpoint.save(tmp_path, 2, {"x": jax.numpy.ones(1000)})
  assert checkpoint.latest_step(tmp_path) == 2


def test_newest_readable_raises_when_no_step_reads_back(tmp_path):
  assert checkpoint.newest_readable(tmp_path / "missing", lambda step: step) is None
  checkpoint.save(tmp_path, 1, {"x": jax.numpy.zeros(3)})
  _damage(tmp_path / "1", "empty metadata")
  with pytest.raises(ValueError, match="JSON|Expecting value"):
    checkpoint.newest_readable(tmp_path, lambda step: checkpoint.read_metadata(tmp_path, step))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]  # nothing renamed
