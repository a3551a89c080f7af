"""Held-out, forget and retain splits, drawn with the reference's ``RandomState`` calls."""

import dataclasses

import numpy as np

from dualoptim_jax.data.datasets import ArrayDataset


def holdout_split(labels: np.ndarray, fraction: float = 0.1, seed: int = 1):
  """Holds out ``int(fraction * n_c)`` random samples of every class ``c``.

  This is the reference's CIFAR train/validation split: one ``rng = RandomState(seed)`` draws, for
  each class ``c = 0 .. max(labels)`` in order,
  ``rng.choice(np.where(labels == c)[0], int(fraction * n_c), replace=False)``.

  Args:
    labels: integer labels of the full training set.
    fraction: the held-out fraction of each class.
    seed: the ``RandomState`` seed (the reference's pretraining split uses 1).

  Returns:
    ``(train_idx, val_idx)``: the remaining positions in ascending order (the reference's 45,000
    CIFAR training positions) and the held-out positions in draw order.
  """
  labels = np.asarray(labels)
  rng = np.random.RandomState(seed)
  held_out = []
  for c in range(int(labels.max()) + 1):
    members = np.flatnonzero(labels == c)
    held_out.append(rng.choice(members, int(fraction * len(members)), replace=False))
  val_idx = np.concatenate(held_out)
  return np.setdiff1d(np.arange(len(labels)), val_idx), val_idx


def random_forget_indices(n: int, num_forget: int, seed: int) -> np.ndarray:
  """Returns ``RandomState(seed).choice(n, num_forget, replace=False)``: positions in a pool of n.

  The reference draws the CIFAR forget set with ``RandomState(args.seed - 1)``; the settings
  (``data/settings.py``) apply that offset.
  """
  return np.random.RandomState(seed).choice(n, num_forget, replace=False)


@dataclasses.dataclass(frozen=True, eq=False)
class UnlearningSplit:
  """A training pool split into forget and retain sets, with the test set to evaluate on.

  Attributes:
    forget: the samples to unlearn, in ascending pool order.
    retain: the rest of the pool, in ascending pool order.
    test: the test set.
    forget_idx: the positions of ``forget`` in the pool, ascending.
    retain_idx: the positions of ``retain`` in the pool, ascending.

  Whether unlearning batches are augmented is a hyper-parameter of the run
  (``UnlearnConfig.augment``), not of the split.
  """

  forget: ArrayDataset
  retain: ArrayDataset
  test: ArrayDataset
  forget_idx: np.ndarray
  retain_idx: np.ndarray

  def __post_init__(self):
    if len(self.forget) != len(self.forget_idx) or len(self.retain) != len(self.retain_idx):
      raise ValueError("forget and retain must hold one sample per position in their index.")
    positions = np.sort(np.concatenate([self.forget_idx, self.retain_idx]))
    if not np.array_equal(positions, np.arange(len(positions))):
      raise ValueError("forget_idx and retain_idx must be disjoint and cover the pool.")


def make_split(
  train_pool: ArrayDataset,
  test: ArrayDataset,
  forget_idx: np.ndarray,
) -> UnlearningSplit:
  """Splits ``train_pool`` into the samples at ``forget_idx`` and the rest.

  Both sets keep the pool's order, as the reference's marked dataset does, whatever the order of
  ``forget_idx``.

  Args:
    train_pool: the set the original model was trained on.
    test: the test set.
    forget_idx: distinct positions in ``train_pool``.
  """
  forget_idx = np.asarray(forget_idx)
  n = len(train_pool)
  if forget_idx.ndim != 1 or (forget_idx.size and not np.issubdtype(forget_idx.dtype, np.integer)):
    raise ValueError(f"forget_idx must be a 1-D integer array, got shape {forget_idx.shape}.")
  if forget_idx.size and (forget_idx.min() < 0 or forget_idx.max() >= n):
    raise ValueError(f"forget_idx must lie in [0, {n}), the positions of the training pool.")
  is_forget = np.zeros(n, bool)
  is_forget[forget_idx] = True
  if is_forget.sum() != len(forget_idx):
    raise ValueError("forget_idx holds repeated positions.")
  forget_idx, retain_idx = np.flatnonzero(is_forget), np.flatnonzero(~is_forget)
  return UnlearningSplit(
    forget=train_pool.subset(forget_idx),
    retain=train_pool.subset(retain_idx),
    test=test,
    forget_idx=forget_idx,
    retain_idx=retain_idx,
  )
