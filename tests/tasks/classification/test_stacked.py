"""`unlearn_stacked`: seeds and forget learning rates in one vmapped program equal the loop."""

import dataclasses

import jax
import numpy as np
import pytest

from dualoptim_jax.data import make_split
from dualoptim_jax.tasks.classification import (
  SCRUB,
  SalUn,
  SFRon,
  UnlearnConfig,
  unlearn,
  unlearn_stacked,
)

CONFIG = UnlearnConfig(epochs=1, batch_size=32, retain_lr=0.01)


def other_split(split, seed):
  """A forget set of the same size drawn from the same pool with another seed."""
  rng = np.random.default_rng(seed)
  n = len(split.forget) + len(split.retain)
  images = np.concatenate([split.forget.images, split.retain.images])
  labels = np.concatenate([split.forget.labels, split.retain.labels])
  whole = dataclasses.replace(split.retain, images=images, labels=labels)
  return make_split(whole, split.test, rng.choice(n, len(split.forget), replace=False))


@pytest.mark.parametrize(
  "method, optimizer",
  # Not SCRUB with Adam: its first forget gradient (student = teacher) is zero up to float noise,
  # which Adam scales to +-lr steps on every weight.
  [(SalUn(), "dual"), (SFRon(iters=12), "adam"), (SCRUB(), "sgd")],
  ids=["SalUn-dual", "SFRon-adam", "SCRUB-sgd"],
)
def test_stacked_points_equal_the_loop(problem, method, optimizer):
  graphdef, original, _, split = problem
  points = [
    (split, dataclasses.replace(CONFIG, forget_lr=1e-3), 1),
    (split, dataclasses.replace(CONFIG, forget_lr=1e-2), 1),
    (other_split(split, 7), dataclasses.replace(CONFIG, forget_lr=1e-3), 2),
  ]
  epochs = []
  stacked = unlearn_stacked(
    method,
    optimizer,
    graphdef,
    original,
    points,
    on_epoch=lambda epoch, states: epochs.append((epoch, len(states))),
  )
  assert epochs == [(1, 3)]
  for (point_split, config, seed), got in zip(points, stacked, strict=True):
    want = unlearn(method, optimizer, graphdef, original, point_split, config, seed)
    # Leaf by leaf, the stacked run's update equals the loop's up to float noise (relative to the
    # update's size: Adam turns an element's noise into a visible step when its gradient is tiny).
    # The hidden layer's bias feeds BatchNorm, so its true gradient is zero and its Adam steps are
    # noise alone: it is left out.
    for (path, a), b, start in zip(
      jax.tree_util.tree_leaves_with_path(got.params),
      jax.tree.leaves(want.params),
      jax.tree.leaves(original.params),
      strict=True,
    ):
      if jax.tree_util.keystr(path) != "['hidden']['bias'].value":
        assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(b - start) + 1e-7, path

  # The points really differ: another forget set, or another forget lr (which SFRon's shared
  # optimizers do not use: they run at the retain lr), moves the weights elsewhere.
  def distance(i, j):
    leaves = zip(
      jax.tree.leaves(stacked[i].params), jax.tree.leaves(stacked[j].params), strict=True
    )
    return max(float(np.max(np.abs(a - b))) for a, b in leaves)

  moved = [distance(0, 1), distance(0, 2)]
  assert moved[1] > 1e-4
  assert (moved[0] > 0) == (method.name != "SFRon"), moved


def test_points_that_differ_in_more_than_seed_and_forget_lr_are_refused(problem):
  graphdef, original, _, split = problem
  points = [(split, CONFIG, 1), (split, dataclasses.replace(CONFIG, retain_lr=0.1), 1)]
  with pytest.raises(ValueError, match="differ in seed and forget_lr only"):
    unlearn_stacked(SalUn(), "dual", graphdef, original, points)
  with pytest.raises(ValueError, match="at least one point"):
    unlearn_stacked(SalUn(), "dual", graphdef, original, [])
