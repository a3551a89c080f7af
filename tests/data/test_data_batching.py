"""Tests of fixed-shape batching and augmentation."""

import itertools

import numpy as np
import pytest

from dualoptim_jax import data


def _indexed_dataset(n, size=8):
  """Sample i has every pixel equal to i % 256 and label i % 10."""
  ids = (np.arange(n) % 256).astype(np.uint8)
  images = np.repeat(ids, size * size * 3).reshape(n, size, size, 3)
  return data.ArrayDataset(images, np.arange(n) % 10, 10, (0.5,) * 3, (0.5,) * 3, "idx")


class _FixedRng:
  """Stands in for np.random.Generator with given crop offsets (top, left) and flips."""

  def __init__(self, offsets, flips):
    self.offsets, self.flips = np.asarray(offsets).T, np.asarray(flips)

  def integers(self, low, high, size):
    assert (low, high, size) == (0, 3, self.offsets.shape)
    return self.offsets

  def random(self, n):
    return np.where(self.flips, 0.0, 1.0)[:n]


def test_to_float():
  out = data.to_float(np.array([0, 51, 255], np.uint8))
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, [0.0, 0.2, 1.0])


def test_num_batches():
  assert data.num_batches(4500, 256) == 18
  assert data.num_batches(512, 256) == 2
  assert data.num_batches(3, 256) == 1
  with pytest.raises(ValueError, match="positive"):
    data.num_batches(10, 0)


@pytest.mark.parametrize("n, batch_size", [(4500, 256), (512, 256), (257, 256), (10, 3)])
def test_epoch_indices_cover_every_sample(n, batch_size):
  idx = data.epoch_indices(n, batch_size, np.random.default_rng(0))
  assert idx.shape == (-(-n // batch_size), batch_size)
  counts = np.bincount(idx.ravel(), minlength=n)
  assert counts.min() == 1 and counts.max() <= 2 and counts.sum() == idx.size
  assert len(np.unique(idx[-1])) == batch_size  # The filler does not repeat the last batch.


def test_epoch_indices_small_dataset_wraps_around():
  idx = data.epoch_indices(5, 12, np.random.default_rng(0))
  assert idx.shape == (1, 12)
  np.testing.assert_array_equal(idx[0, 5:10], idx[0, :5])
  assert sorted(idx[0, :5]) == list(range(5))


def test_epoch_indices_without_shuffle_keeps_order():
  idx = data.epoch_indices(10, 4, np.random.default_rng(0), shuffle=False)
  np.testing.assert_array_equal(idx.ravel()[:10], np.arange(10))
  with pytest.raises(ValueError, match="empty"):
    data.epoch_indices(0, 4, np.random.default_rng(0))


@pytest.mark.parametrize("augment", [False, True])
def test_epoch_batches_shapes_and_pairing(augment):
  ds = _indexed_dataset(37)
  batches = list(data.epoch_batches(ds, 8, np.random.default_rng(1), augment=augment))
  assert len(batches) == 5
  seen = set()
  for images, labels in batches:
    assert images.shape == (8, 8, 8, 3) and images.dtype == np.float32
    assert labels.shape == (8,) and labels.dtype == np.int32
    ids = np.rint(images.max(axis=(1, 2, 3)) * 255).astype(int)  # Crops keep some pixels.
    np.testing.assert_array_equal(labels, ids % 10)
    seen |= set(ids.tolist())
  assert seen == set(range(37))


def test_epoch_batches_reproducible_and_cycle_reshuffles():
  ds = _indexed_dataset(12)
  first = [b[1] for b in data.epoch_batches(ds, 4, np.random.default_rng(7), augment=True)]
  again = [b[1] for b in data.epoch_batches(ds, 4, np.random.default_rng(7), augment=True)]
  np.testing.assert_array_equal(first, again)
  cycled = list(itertools.islice(data.cycle_batches(ds, 4, np.random.default_rng(7)), 6))
  assert len(cycled) == 6 and all(b[0].shape == (4, 8, 8, 3) for b in cycled)
  epoch_1 = np.concatenate([b[0][:, 0, 0, 0] for b in cycled[:3]])
  epoch_2 = np.concatenate([b[0][:, 0, 0, 0] for b in cycled[3:]])
  assert sorted(epoch_1) == sorted(epoch_2) and not np.array_equal(epoch_1, epoch_2)


def test_augment_crop_is_a_zero_filled_shift():
  image = np.arange(1, 17, dtype=np.uint8).reshape(1, 4, 4, 1)
  # Padding 1, window at top=0, left=2: the content moves down 1 and left 1.
  out = data.augment_batch(image, _FixedRng([(0, 2)], [False]), padding=1)
  expected = np.array([[0, 0, 0, 0], [2, 3, 4, 0], [6, 7, 8, 0], [10, 11, 12, 0]])
  np.testing.assert_array_equal(out[0, ..., 0], expected)
  # Window at top=2, left=0: the content moves up 1 and right 1.
  out = data.augment_batch(image, _FixedRng([(2, 0)], [False]), padding=1)
  expected = np.array([[0, 5, 6, 7], [0, 9, 10, 11], [0, 13, 14, 15], [0, 0, 0, 0]])
  np.testing.assert_array_equal(out[0, ..., 0], expected)


def test_augment_flip_and_centre_crop():
  images = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
  out = data.augment_batch(images, _FixedRng([(1, 1), (1, 1)], [True, False]), padding=1)
  assert out.shape == images.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(out[0], images[0, :, ::-1])
  np.testing.assert_array_equal(out[1], images[1])


def test_augment_offsets_and_flips_are_uniform():
  n = 4000
  images = np.zeros((n, 32, 32, 1), np.uint8)
  images[:, 10, 10] = 1  # A marker pixel; its position after augmentation reveals the draw.
  out = data.augment_batch(images, np.random.default_rng(0))
  _, rows, cols, _ = np.nonzero(out)
  assert len(rows) == n
  shifts = rows - 10
  assert set(shifts) == set(range(-4, 5))
  assert abs(np.mean(cols > 15) - 0.5) < 0.05  # Flipped markers land on the right half.
  np.testing.assert_allclose(np.bincount(shifts + 4) / n, 1 / 9, atol=0.02)


def test_eval_batches_pad_and_mask():
  ds = _indexed_dataset(10)
  batches = list(data.eval_batches(ds, 4))
  assert len(batches) == 3
  for images, labels, valid in batches:
    assert images.shape == (4, 8, 8, 3) and labels.shape == valid.shape == (4,)
  assert sum(int(b[2].sum()) for b in batches) == 10
  ids = np.concatenate([np.rint(b[0][b[2], 0, 0, 0] * 255) for b in batches])
  np.testing.assert_array_equal(ids, np.arange(10))
  np.testing.assert_array_equal(batches[-1][2], [True, True, False, False])
  assert not batches[-1][0][2:].any() and batches[-1][1].dtype == np.int32
