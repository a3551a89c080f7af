"""Small end-to-end runs that must really unlearn (see conftest for the problem)."""

import jax
import numpy as np
import optax
import pytest

from dualoptim_jax.tasks.classification import METHODS, UnlearnConfig, salun_mask, unlearn

from conftest import accuracy

CONFIG = UnlearnConfig(epochs=5, batch_size=32, forget_lr=1e-2, retain_lr=1e-2)


def test_the_problem_separates_original_and_retrained(problem):
  graphdef, original, retrained, split = problem
  assert accuracy(graphdef, original, split.forget) == 100.0
  assert accuracy(graphdef, retrained, split.forget) <= 10.0
  assert accuracy(graphdef, retrained, split.test) >= 95.0


@pytest.mark.parametrize("method", ["GA", "RL", "SalUn", "SCRUB", "SFRon"])
def test_dual_unlearning_forgets_and_keeps_retain_accuracy(problem, method):
  graphdef, original, _, split = problem
  state = unlearn(METHODS[method], "dual", graphdef, original, split, CONFIG, seed=0)
  assert accuracy(graphdef, state, split.forget) <= 40.0  # original 100, retrained <= 10
  assert accuracy(graphdef, state, split.retain) >= 95.0
  assert accuracy(graphdef, state, split.test) >= 95.0


def _count(opt_state, objective):
  """The step count of one objective's inner state, read by name."""
  return int(optax.tree.get(opt_state.inner_states[objective], "count"))


def test_objectives_use_their_own_optimizer_state(problem):
  graphdef, original, _, split = problem
  seen = []
  final = unlearn(
    METHODS["GA"],
    "dual",
    graphdef,
    original,
    split,
    CONFIG,
    seed=0,
    on_epoch=lambda epoch, state: seen.append(epoch),
  )
  assert _count(final.opt_state, "forget") == 5 * 2  # AdamW ran every GA step (40 / 32 -> 2)
  retain = final.opt_state.inner_states["retain"]
  assert all(float(abs(x).sum()) == 0 for x in jax.tree.leaves(retain))  # untouched
  assert seen == [1, 2, 3, 4, 5]

  ft = unlearn(METHODS["FT"], "dual", graphdef, original, split, CONFIG, seed=0)
  assert _count(ft.opt_state, "forget") == 0
  assert int(ft.opt_state.count) == 5 * 12  # 360 / 32 -> 12 retain batches per epoch


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("method", ["RL", "SFRon"])
def test_shared_optimizers_unlearn_every_method_loop(problem, optimizer, method):
  """With one shared state the forget steps still move the forget set, and its learning rate
  matters: the same run with every shared learning rate at 0 leaves the model as it was."""
  graphdef, original, _, split = problem
  state = unlearn(METHODS[method], optimizer, graphdef, original, split, CONFIG, seed=1)
  assert accuracy(graphdef, state, split.forget) <= 80.0  # the original model has 100
  assert accuracy(graphdef, state, split.retain) >= 90.0

  frozen = UnlearnConfig(epochs=5, batch_size=32, forget_lr=1e-30, retain_lr=1e-30)
  state = unlearn(METHODS[method], optimizer, graphdef, original, split, frozen, seed=1)
  assert accuracy(graphdef, state, split.forget) == 100.0


def test_same_seed_same_result(problem):
  graphdef, original, _, split = problem
  a = unlearn(METHODS["SalUn"], "dual", graphdef, original, split, CONFIG, seed=3)
  b = unlearn(METHODS["SalUn"], "dual", graphdef, original, split, CONFIG, seed=3)
  assert all(
    bool((x == y).all()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


def test_salun_masked_weights_only_decay_in_both_phases(problem):
  """Outside the saliency mask no gradient reaches the weights in either phase; AdamW's and
  SGD's decays scale every masked weight by the same factor, so theta_T / theta_0 is one number."""
  graphdef, original, _, split = problem
  config = UnlearnConfig(epochs=1, batch_size=32, forget_lr=1e-2, retain_lr=1e-2)
  mask = salun_mask(
    graphdef, original, split.forget, split.retain, ratio=0.5, batch_size=32, seed=0
  )
  final = unlearn(METHODS["SalUn"], "dual", graphdef, original, split, config, seed=0)
  ratios, moved = [], []
  for p0, p1, m in zip(
    jax.tree.leaves(original.params),
    jax.tree.leaves(final.params),
    jax.tree.leaves(mask),
    strict=True,
  ):
    p0, p1, m = np.asarray(p0), np.asarray(p1), np.asarray(m)
    keep = (m == 0) & (np.abs(p0) > 1e-3)
    ratios.append(p1[keep] / p0[keep])
    moved.append(p1[m == 1] - p0[m == 1])
  ratios = np.concatenate(ratios)
  assert 0.99 < ratios.mean() < 1.0
  np.testing.assert_allclose(ratios, ratios.mean(), rtol=1e-4)
  assert np.abs(np.concatenate(moved)).max() > 1e-3  # the salient half does learn


def test_rl_forget_steps_see_uniform_random_labels(problem):
  graphdef, original, _, split = problem
  seen = []

  class SpyRL(type(METHODS["RL"])):
    def relabel(self, objective, labels, rng, num_classes):
      labels = super().relabel(objective, labels, rng, num_classes)
      if objective == "forget":
        seen.append(labels)
      return labels

  config = UnlearnConfig(epochs=3, batch_size=32, forget_lr=1e-2, retain_lr=1e-2)
  unlearn(SpyRL(), "dual", graphdef, original, split, config, seed=0)
  labels = np.concatenate(seen)
  assert len(seen) == 3 * 2 and labels.min() >= 0 and labels.max() < split.forget.num_classes
  assert len(np.unique(labels)) == split.forget.num_classes  # every class drawn
  # Fresh labels every batch: two epochs' draws for the same forget batch positions differ.
  assert not np.array_equal(seen[0], seen[2])
