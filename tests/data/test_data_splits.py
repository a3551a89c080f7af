"""Tests of the held-out, forget and retain splits."""

import numpy as np
import pytest

from dualoptim_jax import data


def _labels(per_class=50, num_classes=10, seed=0):
  return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def _pool(labels, num_classes=10):
  images = (np.arange(len(labels)) % 256).astype(np.uint8).reshape(-1, 1, 1, 1)
  return data.ArrayDataset(images, labels, num_classes, (0.5,), (0.5,), "pool")


def test_holdout_split_reproduces_reference_calls():
  labels = _labels()
  train_idx, val_idx = data.holdout_split(labels)

  rng = np.random.RandomState(1)
  expected_val = np.concatenate(
    [rng.choice(np.where(labels == c)[0], int(0.1 * 50), replace=False) for c in range(10)]
  )
  np.testing.assert_array_equal(val_idx, expected_val)
  np.testing.assert_array_equal(train_idx, sorted(set(range(500)) - set(expected_val.tolist())))
  np.testing.assert_array_equal(np.bincount(labels[val_idx]), [5] * 10)
  assert len(train_idx) == 450 and np.all(np.diff(train_idx) > 0)
  assert not set(train_idx) & set(val_idx)


def test_holdout_split_seed_and_fraction():
  labels = _labels()
  _, val_1 = data.holdout_split(labels, seed=1)
  _, val_2 = data.holdout_split(labels, seed=2)
  assert set(val_1) != set(val_2)
  train_idx, val_idx = data.holdout_split(labels, fraction=0.3, seed=2)
  assert len(val_idx) == 150 and len(train_idx) == 350


def test_random_forget_indices():
  idx = data.random_forget_indices(4500, 450, seed=3)
  np.testing.assert_array_equal(idx, np.random.RandomState(3).choice(4500, 450, replace=False))
  assert len(np.unique(idx)) == 450 and idx.min() >= 0 and idx.max() < 4500
  assert set(idx) != set(data.random_forget_indices(4500, 450, seed=4))


def test_make_split_random_forgetting():
  labels = _labels()
  pool, test = _pool(labels), _pool(_labels(seed=1))
  forget_idx = data.random_forget_indices(500, 50, seed=0)
  split = data.make_split(pool, test, forget_idx)

  np.testing.assert_array_equal(split.forget_idx, np.sort(forget_idx))
  assert len(split.forget) == 50 and len(split.retain) == 450
  assert not set(split.forget_idx) & set(split.retain_idx)
  np.testing.assert_array_equal(np.union1d(split.forget_idx, split.retain_idx), np.arange(500))
  np.testing.assert_array_equal(split.forget.labels, labels[split.forget_idx])
  np.testing.assert_array_equal(split.retain.images, pool.images[split.retain_idx])
  assert split.test is test


@pytest.mark.parametrize(
  "forget_idx, match", [([1, 1], "repeated"), ([500], r"\[0, 500\)"), ([[1]], "1-D")]
)
def test_make_split_rejects_bad_positions(forget_idx, match):
  pool = _pool(_labels())
  with pytest.raises(ValueError, match=match):
    data.make_split(pool, pool, forget_idx)


def test_unlearning_split_checks_disjoint_cover():
  pool = _pool(_labels())
  with pytest.raises(ValueError, match="disjoint and cover"):
    data.UnlearningSplit(
      forget=pool.subset([0, 1]),
      retain=pool.subset([1, 2]),
      test=pool,
      forget_idx=np.array([0, 1]),
      retain_idx=np.array([1, 2]),
    )
