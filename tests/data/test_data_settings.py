"""The named settings: the Fashion-MNIST ones on synthetic IDX files and on the real ones (which CI
installs, so there the real-data test never skips), and the CIFAR convention on synthetic files."""

import os
import struct

import numpy as np
import pytest

from dualoptim_jax import data
from dualoptim_jax.data import settings, tofu

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
  setting = data.load_setting("fashion_mnist_small", root)
  pool, test = setting.pool, setting.test

  rng = np.random.RandomState(0)
  expected = np.sort(
    np.concatenate(
      [rng.choice(np.where(train_labels == c)[0], 500, replace=False) for c in range(10)]
    )
  )
  np.testing.assert_array_equal(pool.labels, train_labels[expected])
  assert pool.images.shape == (5000, 32, 32, 3) and pool.images.dtype == np.uint8
  np.testing.assert_array_equal(pool.images[:, 2:30, 2:30, 1], train_images[expected])
  np.testing.assert_array_equal(pool.images[..., 0], pool.images[..., 2])
  assert test.images.shape == (30, 32, 32, 3)
  assert pool.mean == (0.2860,) * 3 and pool.std == (0.3530,) * 3


def test_split_reproduces_reference_draw(synthetic_root):
  root = synthetic_root[0]
  setting = data.load_setting("fashion_mnist_small", root)
  pool, split = setting.pool, setting.split(2)
  expected = np.random.RandomState(2).choice(5000, 500, replace=False)
  np.testing.assert_array_equal(split.forget_idx, np.sort(expected))
  np.testing.assert_array_equal(split.forget.images, pool.images[np.sort(expected)])
  assert len(split.retain) == 4500


@pytest.mark.skipif(
  not _REAL_FILES_FOUND and not os.environ.get("CI"),
  reason=f"Fashion-MNIST not in {data.FASHION_MNIST_ROOT}",
)
def test_real_fashion_mnist_small():
  train, test = data.load_fashion_mnist()
  assert train.images.shape == (60000, 28, 28, 1) and len(test) == 10000
  setting = data.load_setting("fashion_mnist_small")
  pool, pool_test = setting.pool, setting.test
  assert len(pool) == 5000 and len(pool_test) == 10000
  np.testing.assert_array_equal(np.bincount(pool.labels), [500] * 10)
  assert pool.images.shape == (5000, 32, 32, 3) and pool_test.images.shape == (10000, 32, 32, 3)
  for images in (pool.images, pool_test.images):
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not images[:, border].any()
    assert images[:, 2:30, 2:30].any()

  split_1, split_2 = setting.split(1), setting.split(2)
  tiny = data.load_setting("fashion_mnist_tiny")
  assert len(tiny.pool) == 1000 and len(tiny.test) == 1000 and len(tiny.split(1).forget) == 100
  for split in (split_1, split_2):
    assert len(split.forget) == 500 and len(split.retain) == 4500 and len(split.test) == 10000
    np.testing.assert_array_equal(np.union1d(split.forget_idx, split.retain_idx), np.arange(5000))
  assert set(split_1.forget_idx) != set(split_2.forget_idx)


def test_tiny_setting_is_100_per_class_and_the_first_1000_test_images(synthetic_root):
  root = synthetic_root[0]
  with pytest.raises(ValueError, match="hold 30 test images, fewer than 1000"):
    data.load_setting("fashion_mnist_tiny", root)
  pool, test = data.fashion_mnist_pool(100, root, num_test=20)
  np.testing.assert_array_equal(np.bincount(pool.labels), [100] * 10)
  np.testing.assert_array_equal(test.labels, np.arange(20) % 10)


def test_cifar_settings_hold_out_10_percent_and_draw_with_seed_minus_1(monkeypatch):
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(10), 30)
  train = data.ArrayDataset(
    rng.integers(0, 256, (300, 4, 4, 3), dtype=np.uint8),
    labels,
    10,
    (0.5,) * 3,
    (0.25,) * 3,
    "cifar10",
  )
  monkeypatch.setattr("dualoptim_jax.data.settings.load_dataset", lambda name, root: (train, train))
  setting = data.load_setting("cifar10", "unused")
  kept, _ = data.holdout_split(labels, 0.1, seed=1)
  np.testing.assert_array_equal(setting.pool.labels, labels[kept])
  assert len(setting.pool) == 270 and setting.num_forget == 27
  np.testing.assert_array_equal(
    setting.split(1).forget_idx, np.sort(np.random.RandomState(0).choice(270, 27, replace=False))
  )


def test_unknown_setting_is_a_clear_error():
  with pytest.raises(
    ValueError, match="Unknown setting 'mnist3d'; known settings: fashion_mnist_tiny"
  ):
    data.load_setting("mnist3d")


@pytest.mark.skipif(
  not tofu.TOFU_ROOT.is_dir() and not os.environ.get("CI"), reason=f"no {tofu.TOFU_ROOT}"
)
def test_tofu_mini_is_40_authors_of_which_4_are_forgotten():
  split = settings.load_tofu_setting("tofu_mini")
  assert (len(split.forget), len(split.retain)) == (80, 720)
  full = tofu.load_tofu("forget10", 1)
  assert split.forget == full.forget[:80]  # the task's first 4 authors (20 QA each)
  retain10 = tofu.read_jsonl(tofu.TOFU_ROOT / "retain10.json")
  task2 = [r for r in tofu.read_jsonl(tofu.TOFU_ROOT / "forget10.json") if r["task_id"] == "2"]
  assert split.retain == retain10 + task2[:320]  # the retain eval set's authors are trained on
  assert [r["question"] for r in split.forget_eval] == [r["question"] for r in split.forget]
  assert split.retain_eval == full.retain_eval
  every = settings.load_tofu_setting("tofu")
  assert (len(every.forget), len(every.retain)) == (400, 3600)
  with pytest.raises(ValueError, match="tofu_mini holds no QA of forget10 task 3"):
    settings.load_tofu_setting("tofu_mini", "forget10", 3)
  with pytest.raises(ValueError, match="Unknown TOFU setting 'tofu_big'"):
    settings.load_tofu_setting("tofu_big")
