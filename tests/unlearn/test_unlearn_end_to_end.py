"""Small end-to-end runs that must really unlearn (see conftest for the problem)."""

import jax
import pytest

from dualoptim_jax.unlearn import UnlearnConfig, unlearn
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
  state = unlearn(method, "dual", graphdef, original, split, CONFIG, seed=0)
  assert accuracy(graphdef, state, split.forget) <= 40.0  # original 100, retrained <= 10
  assert accuracy(graphdef, state, split.retain) >= 95.0
  assert accuracy(graphdef, state, split.test) >= 95.0


def test_objectives_use_their_own_optimizer_state(problem):
  graphdef, original, _, split = problem
  seen = []
  final = unlearn("GA", "dual", graphdef, original, split, CONFIG, seed=0,
                  on_epoch=lambda epoch, state: seen.append(epoch))
  inner = final.opt_state.inner_states
  assert int(inner["forget"][0].count) == 5 * 2  # AdamW ran every GA step (40 / 32 -> 2 batches)
  assert all(float(abs(x).sum()) == 0 for x in jax.tree.leaves(inner["retain"]))  # untouched
  assert seen == [1, 2, 3, 4, 5]

  ft = unlearn("FT", "dual", graphdef, original, split, CONFIG, seed=0)
  assert int(ft.opt_state.inner_states["forget"][0].count) == 0
  assert int(ft.opt_state.count) == 5 * 12  # 360 / 32 -> 12 retain batches per epoch


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_shared_optimizers_run_every_method_loop(problem, optimizer):
  graphdef, original, _, split = problem
  for method in ("RL", "SFRon"):
    state = unlearn(method, optimizer, graphdef, original, split, CONFIG, seed=1)
    assert int(state.opt_state[-1].count if method == "SFRon" else state.opt_state.count) > 0
    assert accuracy(graphdef, state, split.retain) >= 90.0


def test_same_seed_same_result(problem):
  graphdef, original, _, split = problem
  a = unlearn("SalUn", "dual", graphdef, original, split, CONFIG, seed=3)
  b = unlearn("SalUn", "dual", graphdef, original, split, CONFIG, seed=3)
  assert all(bool((x == y).all()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_salun_masked_weights_only_decay_in_both_phases(problem):
  """Outside the saliency mask no gradient reaches the weights in either phase; AdamW's and
  SGD's decays scale every masked weight by the same factor, so theta_T / theta_0 is one number."""
  import numpy as np
  from dualoptim_jax.unlearn import salun_mask

  graphdef, original, _, split = problem
  config = UnlearnConfig(epochs=1, batch_size=32, forget_lr=1e-2, retain_lr=1e-2)
  mask = salun_mask(graphdef, original, split.forget, split.retain, ratio=0.5, batch_size=32,
                    seed=0)
  final = unlearn("SalUn", "dual", graphdef, original, split, config, seed=0)
  ratios, moved = [], []
  for p0, p1, m in zip(jax.tree.leaves(original.params), jax.tree.leaves(final.params),
                       jax.tree.leaves(mask)):
    p0, p1, m = np.asarray(p0), np.asarray(p1), np.asarray(m)
    keep = (m == 0) & (np.abs(p0) > 1e-3)
    ratios.append(p1[keep] / p0[keep])
    moved.append(p1[m == 1] - p0[m == 1])
  ratios = np.concatenate(ratios)
  assert 0.99 < ratios.mean() < 1.0
  np.testing.assert_allclose(ratios, ratios.mean(), rtol=1e-4)
  assert np.abs(np.concatenate(moved)).max() > 1e-3  # the salient half does learn


def test_rl_forget_steps_see_uniform_random_labels(problem, monkeypatch):
  import numpy as np
  from dualoptim_jax.unlearn import methods

  graphdef, original, _, split = problem
  seen = []
  real_make_step = methods.make_step

  def spying_make_step(graphdef, tx, loss_fn, objective=None):
    step = real_make_step(graphdef, tx, loss_fn, objective)

    def spy(state, images, labels, *args, **kwargs):
      if objective == "forget":
        seen.append(np.asarray(labels))
      return step(state, images, labels, *args, **kwargs)
    return spy

  monkeypatch.setattr(methods, "make_step", spying_make_step)
  config = UnlearnConfig(epochs=3, batch_size=32, forget_lr=1e-2, retain_lr=1e-2)
  unlearn("RL", "dual", graphdef, original, split, config, seed=0)
  labels = np.concatenate(seen)
  assert len(seen) == 3 * 2 and labels.min() >= 0 and labels.max() < split.forget.num_classes
  assert len(np.unique(labels)) == split.forget.num_classes  # every class drawn
  # Fresh labels every batch: two epochs' draws for the same forget batch positions differ.
  assert not np.array_equal(seen[0], seen[2])
