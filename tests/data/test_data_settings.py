"""Tests of the Fashion-MNIST unlearning setting, on synthetic IDX files and on the real ones."""

import os
import struct

import numpy as np
import pytest

from dualoptim_jax import data

_REAL_FILES_FOUND = os.path.isfile(
    os.path.join(data.FASHION_MNIST_ROOT, "train-images-idx3-ubyte.gz")
) or os.path.isfile(os.path.join(data.FASHION_MNIST_ROOT, "train-images-idx3-ubyte"))


def _write_idx(path, array):
  header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
  """Fashion-MNIST files with 520 training images per class and 30 test images."""
  root = tmp_path_factory.mktemp("fashion_mnist")
  rng = np.random.default_rng(0)
  train_labels = rng.permutation(np.repeat(np.arange(10), 520))
  train_images = rng.integers(1, 256, (len(train_labels), 28, 28))
  _write_idx(root / "train-images-idx3-ubyte", train_images)
  _write_idx(root / "train-labels-idx1-ubyte", train_labels)
  _write_idx(root / "t10k-images-idx3-ubyte", rng.integers(1, 256, (30, 28, 28)))
  _write_idx(root / "t10k-labels-idx1-ubyte", np.arange(30) % 10)
  return root, train_images, train_labels


def test_pool_reproduces_reference_draw(synthetic_root):
  root, train_images, train_labels = synthetic_root
  pool, test = data.fashion_mnist_small_pool(root)

  rng = np.random.RandomState(0)
  expected = np.sort(np.concatenate(
      [rng.choice(np.where(train_labels == c)[0], 500, replace=False) for c in range(10)]
  ))
  np.testing.assert_array_equal(pool.labels, train_labels[expected])
  assert pool.images.shape == (5000, 32, 32, 3) and pool.images.dtype == np.uint8
  np.testing.assert_array_equal(pool.images[:, 2:30, 2:30, 1], train_images[expected])
  np.testing.assert_array_equal(pool.images[..., 0], pool.images[..., 2])
  assert test.images.shape == (30, 32, 32, 3)
  assert pool.mean == (0.2860,) * 3 and pool.std == (0.3530,) * 3


def test_split_reproduces_reference_draw(synthetic_root):
  root = synthetic_root[0]
  pool, _ = data.fashion_mnist_small_pool(root)
  split = data.fashion_mnist_small(2, root)
  expected = np.random.RandomState(2).choice(5000, 500, replace=False)
  np.testing.assert_array_equal(split.forget_idx, np.sort(expected))
  np.testing.assert_array_equal(split.forget.images, pool.images[np.sort(expected)])
  assert len(split.retain) == 4500


@pytest.mark.skipif(not _REAL_FILES_FOUND, reason=f"Fashion-MNIST not in {data.FASHION_MNIST_ROOT}")
def test_real_fashion_mnist_small():
  train, test = data.load_fashion_mnist()
  assert train.images.shape == (60000, 28, 28, 1) and len(test) == 10000
  pool, pool_test = data.fashion_mnist_small_pool()
  assert len(pool) == 5000 and len(pool_test) == 10000
  np.testing.assert_array_equal(np.bincount(pool.labels), [500] * 10)
  assert pool.images.shape == (5000, 32, 32, 3) and pool_test.images.shape == (10000, 32, 32, 3)
  for images in (pool.images, pool_test.images):
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not images[:, border].any()
    assert images[:, 2:30, 2:30].any()

  split_1, split_2 = data.fashion_mnist_small(1), data.fashion_mnist_small(2)
  for split in (split_1, split_2):
    assert len(split.forget) == 500 and len(split.retain) == 4500 and len(split.test) == 10000
    np.testing.assert_array_equal(
        np.union1d(split.forget_idx, split.retain_idx), np.arange(5000)
    )
  assert set(split_1.forget_idx) != set(split_2.forget_idx)
