"""Loaders for the paper's image datasets, from their standard on-disk formats.

Each loader reads a local directory and returns ``(train, test)`` as :class:`ArrayDataset`, with
uint8 NHWC images and the reference's normalisation constants. Nothing is downloaded, except by
:func:`load_tfds` when asked to.
"""

import concurrent.futures
import gzip
import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from dualoptim_jax.data.datasets import ArrayDataset

PathLike = str | os.PathLike

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist.

# Per-channel (mean, std) of the [0, 1]-scaled images, as the reference models normalise.
_STATS = {
  "fashion_mnist": ((0.2860,), (0.3530,)),
  "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
  "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
  "svhn": ((0.4377, 0.4438, 0.4728), (0.1201, 0.1231, 0.1052)),
  "tiny_imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet statistics.
}


def _dataset(name: str, images: np.ndarray, labels: np.ndarray, num_classes: int) -> ArrayDataset:
  mean, std = _STATS[name]
  return ArrayDataset(images, labels, num_classes, mean, std, name)


def _check_dir(root: PathLike, what: str) -> Path:
  root = Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"{root}: no such directory; expected {what}.")
  return root


def _require(path: Path, what: str) -> Path:
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file; expected {what}.")
  return path


def _find_folder(root: PathLike, folder: str, marker: str, what: str) -> Path:
  """Returns ``root`` if it holds ``marker``, else ``root/folder`` if that does."""
  root = _check_dir(root, what)
  for candidate in (root, root / folder):
    if (candidate / marker).is_file():
      return candidate
  raise FileNotFoundError(f"Neither {root} nor {root / folder} holds {marker!r}; expected {what}.")


# Fashion-MNIST.


def _read_idx(path: Path) -> np.ndarray:
  """Reads an IDX file of unsigned bytes (optionally gzipped)."""
  with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[:3] != b"\x00\x00\x08":
    raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()}).")
  ndim = data[3]
  shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != math.prod(shape):
    raise ValueError(f"{path}: the header gives shape {shape} but {body.size} values follow.")
  return body.reshape(shape)


def _idx_file(root: Path, stem: str) -> Path:
  for path in (root / stem, root / f"{stem}.gz"):
    if path.is_file():
      return path
  raise FileNotFoundError(f"{root / stem}: no such file; expected the IDX file {stem}[.gz].")


def load_fashion_mnist(root: PathLike = FASHION_MNIST_ROOT) -> tuple[ArrayDataset, ArrayDataset]:
  """Loads Fashion-MNIST from its four IDX files, gzipped or not: 60k train, 10k test, 28x28x1.

  Args:
    root: directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
      ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``). The
      default is where the Debian package ``dataset-fashion-mnist`` installs them.
  """
  root = _check_dir(root, "the Fashion-MNIST IDX files")

  def split(prefix):
    images = _read_idx(_idx_file(root, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_idx_file(root, f"{prefix}-labels-idx1-ubyte"))
    return _dataset("fashion_mnist", images[..., None], labels, 10)

  return split("train"), split("t10k")


# CIFAR-10 and CIFAR-100.


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
  """Reads one pickled batch of the "python version"; rows are 3072 bytes in CHW order.

  Unpickling runs code from the file: load only trusted files.
  """
  with open(path, "rb") as f:
    batch = pickle.load(f, encoding="bytes")
  images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), np.asarray(batch[label_key])


def _read_cifar(folder: Path, files: list[str], label_key: bytes, what: str):
  parts = [_read_cifar_batch(_require(folder / name, what), label_key) for name in files]
  return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar10(root: PathLike) -> tuple[ArrayDataset, ArrayDataset]:
  """Loads CIFAR-10 from the "python version" batches: 50k train, 10k test, 32x32x3.

  Args:
    root: the extracted ``cifar-10-batches-py`` folder (``data_batch_1`` ... ``data_batch_5``,
      ``test_batch``) or its parent.
  """
  what = "the CIFAR-10 python-version batches (cifar-10-batches-py)"
  folder = _find_folder(root, "cifar-10-batches-py", "test_batch", what)
  train = _read_cifar(folder, [f"data_batch_{i}" for i in range(1, 6)], b"labels", what)
  test = _read_cifar(folder, ["test_batch"], b"labels", what)
  return _dataset("cifar10", *train, 10), _dataset("cifar10", *test, 10)


def load_cifar100(root: PathLike) -> tuple[ArrayDataset, ArrayDataset]:
  """Loads CIFAR-100 with its 100 fine labels: 50k train, 10k test, 32x32x3.

  Args:
    root: the extracted ``cifar-100-python`` folder (``train``, ``test``) or its parent.
  """
  what = "the CIFAR-100 python-version files (cifar-100-python)"
  folder = _find_folder(root, "cifar-100-python", "test", what)
  train = _read_cifar(folder, ["train"], b"fine_labels", what)
  test = _read_cifar(folder, ["test"], b"fine_labels", what)
  return _dataset("cifar100", *train, 100), _dataset("cifar100", *test, 100)


# SVHN.


def _read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
  mat = scipy.io.loadmat(path)
  images = np.ascontiguousarray(np.transpose(mat["X"], (3, 0, 1, 2)), np.uint8)
  labels = mat["y"].ravel().astype(np.int32)
  return images, np.where(labels == 10, 0, labels)  # The files label digit 0 as 10.


def load_svhn(root: PathLike) -> tuple[ArrayDataset, ArrayDataset]:
  """Loads SVHN cropped digits (``train_32x32.mat``, ``test_32x32.mat``): 73,257 / 26,032 images.

  Labels are the digits 0-9 (the files store digit 0 as 10). The ``extra`` split is not used.
  """
  root = _check_dir(root, "the SVHN files train_32x32.mat and test_32x32.mat")

  def split(name):
    path = _require(root / f"{name}_32x32.mat", f"the SVHN cropped-digits file {name}_32x32.mat")
    return _dataset("svhn", *_read_svhn(path), 10)

  return split("train"), split("test")


# TinyImageNet.


def _read_rgb(path: Path) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))  # A few TinyImageNet images are greyscale.


def _read_images(paths: list[Path], size: int) -> np.ndarray:
  out = np.empty((len(paths), size, size, 3), np.uint8)
  with concurrent.futures.ThreadPoolExecutor() as pool:  # PIL decodes without holding the GIL.
    for i, (path, image) in enumerate(zip(paths, pool.map(_read_rgb, paths), strict=True)):
      if image.shape != out.shape[1:]:
        raise ValueError(f"{path}: expected a {size}x{size} image, got {image.shape[1::-1]}.")
      out[i] = image
  return out


def load_tiny_imagenet(root: PathLike) -> tuple[ArrayDataset, ArrayDataset]:
  """Loads TinyImageNet at its native 64x64: 100k train images and the 10k validation images.

  The class index of a wnid is its position in the sorted ``wnids.txt``. The validation images
  serve as the test set. The reference instead splits them into 25 images per class for
  validation and 25 for test, and reports its test accuracy on that 5,000-image half. It also
  resizes to 224x224 (bicubic), which is not done here.

  Args:
    root: the extracted ``tiny-imagenet-200`` folder (``wnids.txt``,
      ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG``, ``val/val_annotations.txt``) or its
      parent.
  """
  what = "the TinyImageNet folder tiny-imagenet-200"
  folder = _find_folder(root, "tiny-imagenet-200", "wnids.txt", what)
  wnids = sorted((folder / "wnids.txt").read_text().split())
  index = {wnid: i for i, wnid in enumerate(wnids)}

  train_paths, train_labels = [], []
  for wnid in wnids:
    paths = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
    if not paths:
      raise FileNotFoundError(
        f"{folder / 'train' / wnid / 'images'}: no *.JPEG files; expected the training "
        f"images of class {wnid}."
      )
    train_paths += paths
    train_labels += [index[wnid]] * len(paths)

  annotations = _require(folder / "val" / "val_annotations.txt", f"{what} validation labels")
  val_paths, val_labels = [], []
  for line in annotations.read_text().splitlines():
    if line.strip():
      name, wnid = line.split("\t")[:2]
      if wnid not in index:
        raise ValueError(f"{annotations}: {name} has wnid {wnid!r}, which is not in wnids.txt.")
      val_paths.append(folder / "val" / "images" / name)
      val_labels.append(index[wnid])

  train = _dataset("tiny_imagenet", _read_images(train_paths, 64), np.array(train_labels), 200)
  test = _dataset("tiny_imagenet", _read_images(val_paths, 64), np.array(val_labels), 200)
  return train, test


# tensorflow-datasets.

_TFDS_STATS = {  # tfds name -> the key of its reference statistics.
  "fashion_mnist": "fashion_mnist",
  "cifar10": "cifar10",
  "cifar100": "cifar100",
  "svhn_cropped": "svhn",
}


def load_tfds(
  name: str, data_dir: PathLike | None = None, *, download: bool = False, test_split: str = "test"
) -> tuple[ArrayDataset, ArrayDataset]:
  """Loads the ``train`` and ``test_split`` splits of a tensorflow-datasets image dataset.

  Needs the optional ``tfds`` extra (``pip install 'dualoptim_jax[tfds]'``). The normalisation
  constants are the reference's for ``fashion_mnist``, ``cifar10``, ``cifar100`` and
  ``svhn_cropped``; for any other dataset they are computed from the training images.

  Args:
    name: a tfds name with an ``image`` and a ``label`` feature, e.g. ``"cifar10"``.
    data_dir: the tfds data directory; None uses the tfds default.
    download: whether tfds may download and prepare the dataset (off by default).
    test_split: the split returned as the test set.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
      "load_tfds needs tensorflow-datasets; install the extra: pip install 'dualoptim_jax[tfds]'."
    ) from e
  splits, info = tfds.load(
    name,
    split=["train", test_split],
    data_dir=data_dir,
    download=download,
    as_supervised=True,
    batch_size=-1,
    with_info=True,
  )
  (x_train, y_train), (x_test, y_test) = tfds.as_numpy(splits)
  if name in _TFDS_STATS:
    mean, std = _STATS[_TFDS_STATS[name]]
  else:
    mean = x_train.mean(axis=(0, 1, 2), dtype=np.float64) / 255
    std = x_train.std(axis=(0, 1, 2), dtype=np.float64) / 255
  num_classes = info.features["label"].num_classes
  return tuple(
    ArrayDataset(x, y, num_classes, tuple(mean), tuple(std), name)
    for x, y in ((x_train, y_train), (x_test, y_test))
  )


# Registry.

_LOADERS = {
  "fashion_mnist": load_fashion_mnist,
  "cifar10": load_cifar10,
  "cifar100": load_cifar100,
  "svhn": load_svhn,
  "tiny_imagenet": load_tiny_imagenet,
}
_DEFAULT_ROOTS = {"fashion_mnist": FASHION_MNIST_ROOT}


def load_dataset(name: str, root: PathLike | None = None) -> tuple[ArrayDataset, ArrayDataset]:
  """Loads ``(train, test)`` of a named dataset from ``root`` (or its default location)."""
  if name not in _LOADERS:
    raise ValueError(f"Unknown dataset {name!r}; known datasets: {', '.join(_LOADERS)}.")
  root = root if root is not None else _DEFAULT_ROOTS.get(name)
  if root is None:
    raise ValueError(f"{name!r} has no default location; pass root, the directory holding it.")
  return _LOADERS[name](root)
