import jax.numpy as jnp
import numpy as np
import pytest

import dualoptim_jax as dj


def test_epoch_blocks_runs_all_forget_then_all_retain_batches_each_epoch():
  # Reference CIFAR-10 10%: 18 forget batches then 159 retain batches per epoch.
  schedule = dj.epoch_blocks(18, 159, epochs=10)
  labels = list(schedule)
  assert len(labels) == len(schedule) == 1770
  assert labels.count("forget") == 180 and labels.count("retain") == 1590
  assert labels[:18] == ["forget"] * 18 and labels[18:177] == ["retain"] * 159
  assert labels[177] == "forget"


def test_alternating_matches_the_reference_mode_rule():
  f, r = 1, 5
  schedule = dj.alternating(f, r, total_steps=30)
  for t, label in enumerate(schedule):
    T = t + 1  # the reference's 1-indexed optimizer step
    assert (label == "forget") == ((T - 1) % (f + r) < f)
  assert "".join(label[0] for label in list(schedule)[:8]) == "frrrrrfr"


def test_steps_before_counts_each_objective():
  schedule = dj.alternating(2, 3)
  labels = [schedule(t) for t in range(23)]
  for t in range(23):
    assert schedule.steps_before(t, "forget") == labels[:t].count("forget")
    assert schedule.steps_before(t, "retain") == labels[:t].count("retain")
  with pytest.raises(ValueError, match="forget"):
    schedule.steps_before(3, "other")


def test_is_forget_works_on_arrays():
  schedule = dj.alternating(1, 5)
  np.testing.assert_array_equal(
    schedule.is_forget(jnp.arange(7)), [True, False, False, False, False, False, True]
  )


def test_one_sided_and_invalid_schedules():
  assert set(dj.epoch_blocks(0, 4, 2)) == {"retain"}  # FT
  assert set(dj.epoch_blocks(3, 0, 2)) == {"forget"}  # GA
  with pytest.raises(ValueError, match="not both 0"):
    dj.alternating(0, 0)
  with pytest.raises(ValueError, match=">= 0"):
    dj.alternating(-1, 2)
  with pytest.raises(IndexError, match="outside the schedule"):
    dj.epoch_blocks(1, 1, 1)(2)
  with pytest.raises(TypeError, match="endless"):
    len(dj.alternating(1, 5))
