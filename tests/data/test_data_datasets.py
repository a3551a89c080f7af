"""Tests of ArrayDataset and the file-format loaders, on small files written in each format."""

import gzip
import pickle
import struct
import sys

import numpy as np
import pytest
import scipy.io
from PIL import Image

from dualoptim_jax import data


def _dataset(n=6, num_classes=3, channels=1):
  images = np.arange(n * 2 * 2 * channels, dtype=np.uint8).reshape(n, 2, 2, channels)
  labels = np.arange(n) % num_classes
  mean, std = (0.5,) * channels, (0.25,) * channels
  return data.ArrayDataset(images, labels, num_classes, mean, std, "toy")


# ArrayDataset.


def test_array_dataset_casts_labels_and_constants():
  ds = _dataset()
  assert len(ds) == 6
  assert ds.labels.dtype == np.int32
  assert ds.mean == (0.5,) and ds.std == (0.25,)
  assert "toy" in repr(ds) and "(6, 2, 2, 1)" in repr(ds)


@pytest.mark.parametrize(
  "images, labels, match",
  [
    (np.zeros((2, 2, 2, 1), np.float32), [0, 1], "uint8"),
    (np.zeros((2, 2, 2), np.uint8), [0, 1], r"\(N, H, W, C\)"),
    (np.zeros((2, 2, 2, 1), np.uint8), [0], "2 images but 1 labels"),
    (np.zeros((2, 2, 2, 1), np.uint8), [0, 3], r"\[0, 3\)"),
    (np.zeros((2, 2, 2, 1), np.uint8), [-1, 0], r"\[0, 3\)"),
    (np.zeros((2, 2, 2, 1), np.uint8), [0.0, 1.0], "integer"),
    (np.zeros((2, 2, 2, 3), np.uint8), [0, 1], "one value per channel"),
  ],
)
def test_array_dataset_rejects_bad_arrays(images, labels, match):
  with pytest.raises(ValueError, match=match):
    data.ArrayDataset(images, np.asarray(labels), 3, (0.5,), (0.25,), "bad")


def test_array_dataset_rejects_nonpositive_std():
  with pytest.raises(ValueError, match="positive"):
    data.ArrayDataset(np.zeros((1, 2, 2, 1), np.uint8), np.zeros(1, int), 2, (0.5,), (0.0,), "bad")


def test_subset_keeps_given_order_and_metadata():
  ds = _dataset()
  sub = ds.subset([4, 1, 1])
  np.testing.assert_array_equal(sub.images, ds.images[[4, 1, 1]])
  np.testing.assert_array_equal(sub.labels, [1, 1, 1])
  assert (sub.num_classes, sub.mean, sub.std, sub.name) == (3, ds.mean, ds.std, "toy")
  assert len(ds.subset([])) == 0
  with pytest.raises(ValueError, match="integer"):
    ds.subset(np.ones(6, bool))


# Fashion-MNIST (IDX).


def _write_idx(path, array):
  payload = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  payload += array.astype(np.uint8).tobytes()
  with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
    f.write(payload)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_load_fashion_mnist(tmp_path, suffix):
  rng = np.random.default_rng(0)
  arrays = {
    "train-images-idx3-ubyte": rng.integers(0, 256, (7, 28, 28)),
    "train-labels-idx1-ubyte": rng.integers(0, 10, 7),
    "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
    "t10k-labels-idx1-ubyte": np.array([9, 0, 4]),
  }
  for stem, array in arrays.items():
    _write_idx(tmp_path / f"{stem}{suffix}", array)
  train, test = data.load_fashion_mnist(tmp_path)
  assert train.images.shape == (7, 28, 28, 1) and test.images.shape == (3, 28, 28, 1)
  assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
  np.testing.assert_array_equal(train.images[..., 0], arrays["train-images-idx3-ubyte"])
  np.testing.assert_array_equal(train.labels, arrays["train-labels-idx1-ubyte"])
  np.testing.assert_array_equal(test.labels, [9, 0, 4])
  assert train.num_classes == 10 and train.mean == (0.2860,) and train.std == (0.3530,)


def test_load_fashion_mnist_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.*Fashion-MNIST"):
    data.load_fashion_mnist(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
    data.load_fashion_mnist(tmp_path)
  (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03rest")
  with pytest.raises(ValueError, match="not an IDX file"):
    data.load_fashion_mnist(tmp_path)


# CIFAR (python-version pickles).


def _write_cifar_batch(path, chw, labels, label_key):
  with open(path, "wb") as f:
    pickle.dump({b"data": chw.reshape(len(chw), -1), label_key: list(labels)}, f)


def _chw(n, seed):
  return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


@pytest.mark.parametrize("use_parent", [False, True])
def test_load_cifar10(tmp_path, use_parent):
  folder = tmp_path / "cifar-10-batches-py"
  folder.mkdir()
  batches = [_chw(2, seed) for seed in range(6)]
  for i in range(5):
    _write_cifar_batch(folder / f"data_batch_{i + 1}", batches[i], [i, 9], b"labels")
  _write_cifar_batch(folder / "test_batch", batches[5], [3, 4], b"labels")

  train, test = data.load_cifar10(tmp_path if use_parent else folder)
  assert train.images.shape == (10, 32, 32, 3) and test.images.shape == (2, 32, 32, 3)
  assert train.images.flags.c_contiguous
  np.testing.assert_array_equal(train.labels, [0, 9, 1, 9, 2, 9, 3, 9, 4, 9])
  # Channel c of pixel (y, x) is byte c * 1024 + y * 32 + x of the row.
  row = batches[1][1].reshape(-1)
  assert train.images[3, 5, 7, 2] == row[2 * 1024 + 5 * 32 + 7]
  np.testing.assert_array_equal(test.images, batches[5].transpose(0, 2, 3, 1))
  assert train.mean == (0.4914, 0.4822, 0.4465) and train.std == (0.2470, 0.2435, 0.2616)


def test_load_cifar10_missing_batch(tmp_path):
  folder = tmp_path / "cifar-10-batches-py"
  folder.mkdir()
  _write_cifar_batch(folder / "test_batch", _chw(1, 0), [0], b"labels")
  with pytest.raises(FileNotFoundError, match="data_batch_1"):
    data.load_cifar10(tmp_path)
  with pytest.raises(FileNotFoundError, match="missing: no such directory"):
    data.load_cifar10(tmp_path / "missing")


def test_load_cifar100_uses_fine_labels(tmp_path):
  folder = tmp_path / "cifar-100-python"
  folder.mkdir()
  for name, labels in [("train", [99, 0, 57]), ("test", [12])]:
    chw = _chw(len(labels), len(labels))
    with open(folder / name, "wb") as f:
      pickle.dump(
        {
          b"data": chw.reshape(len(chw), -1),
          b"fine_labels": labels,
          b"coarse_labels": [0] * len(labels),
        },
        f,
      )
  train, test = data.load_cifar100(tmp_path)
  np.testing.assert_array_equal(train.labels, [99, 0, 57])
  np.testing.assert_array_equal(test.labels, [12])
  assert train.num_classes == 100 and train.mean == (0.5071, 0.4866, 0.4409)


# SVHN (.mat).


def test_load_svhn_maps_ten_to_zero(tmp_path):
  rng = np.random.default_rng(0)
  x = {
    "train": rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8),
    "test": rng.integers(0, 256, (32, 32, 3, 2), dtype=np.uint8),
  }
  scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x["train"], "y": [[10], [1], [9], [10]]})
  scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x["test"], "y": [[3], [10]]})
  train, test = data.load_svhn(tmp_path)
  assert train.images.shape == (4, 32, 32, 3) and train.images.dtype == np.uint8
  np.testing.assert_array_equal(train.labels, [0, 1, 9, 0])
  np.testing.assert_array_equal(test.labels, [3, 0])
  assert train.images[2, 4, 6, 1] == x["train"][4, 6, 1, 2]
  np.testing.assert_array_equal(test.images, x["test"].transpose(3, 0, 1, 2))
  assert train.mean == (0.4377, 0.4438, 0.4728) and train.std == (0.1201, 0.1231, 0.1052)


def test_load_svhn_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="train_32x32.mat"):
    data.load_svhn(tmp_path)


# TinyImageNet (JPEG tree).


def _write_jpeg(path, color, mode="RGB"):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new(mode, (64, 64), color).save(path, quality=95)


def test_load_tiny_imagenet(tmp_path):
  folder = tmp_path / "tiny-imagenet-200"
  folder.mkdir()
  (folder / "wnids.txt").write_text("n09\nn01\n")  # Sorted: n01 -> 0, n09 -> 1.
  colors = {"n01": (200, 30, 30), "n09": (30, 30, 200)}
  for wnid, color in colors.items():
    for i in range(2):
      _write_jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", color)
  _write_jpeg(folder / "val" / "images" / "val_0.JPEG", colors["n09"])
  _write_jpeg(folder / "val" / "images" / "val_1.JPEG", 128, mode="L")
  (folder / "val" / "val_annotations.txt").write_text(
    "val_0.JPEG\tn09\t0\t0\t63\t63\nval_1.JPEG\tn01\t0\t0\t63\t63\n"
  )

  train, test = data.load_tiny_imagenet(tmp_path)
  assert train.images.shape == (4, 64, 64, 3) and test.images.shape == (2, 64, 64, 3)
  assert train.num_classes == 200 and train.mean == (0.485, 0.456, 0.406)
  np.testing.assert_array_equal(train.labels, [0, 0, 1, 1])
  np.testing.assert_array_equal(test.labels, [1, 0])
  np.testing.assert_allclose(train.images[0].mean(axis=(0, 1)), colors["n01"], atol=3)
  np.testing.assert_allclose(test.images[0].mean(axis=(0, 1)), colors["n09"], atol=3)
  np.testing.assert_allclose(test.images[1].mean(axis=(0, 1)), (128, 128, 128), atol=3)


def test_load_tiny_imagenet_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="wnids.txt"):
    data.load_tiny_imagenet(tmp_path)
  (tmp_path / "wnids.txt").write_text("n01\n")
  with pytest.raises(FileNotFoundError, match="n01"):
    data.load_tiny_imagenet(tmp_path)


# Registry and tensorflow-datasets.


def test_load_dataset_registry(tmp_path):
  with pytest.raises(ValueError, match="fashion_mnist, cifar10, cifar100, svhn, tiny_imagenet"):
    data.load_dataset("mnist")
  with pytest.raises(ValueError, match="no default location"):
    data.load_dataset("cifar10")
  blank = np.zeros((32, 32, 3, 1), np.uint8)
  scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": blank, "y": [[5]]})
  scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": blank, "y": [[6]]})
  train, test = data.load_dataset("svhn", tmp_path)
  assert (train.name, int(train.labels[0]), int(test.labels[0])) == ("svhn", 5, 6)


def test_load_tfds_without_tensorflow_datasets(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # Makes the import fail.
  with pytest.raises(ImportError, match=r"dualoptim_jax\[tfds\]"):
    data.load_tfds("cifar10")
