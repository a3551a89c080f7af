"""Named unlearning settings: a training pool, a test set and the forget set of each seed."""

import numpy as np

from dualoptim_jax.data.datasets import ArrayDataset
from dualoptim_jax.data.loaders import FASHION_MNIST_ROOT, PathLike, load_fashion_mnist
from dualoptim_jax.data.splits import UnlearningSplit, make_split, random_forget_indices

FASHION_MNIST_SMALL_SEEDS = (1, 2, 3, 4, 5)


def _to_32x32_rgb(data: ArrayDataset) -> ArrayDataset:
  """Zero-pads 28x28 greyscale images by 2 pixels and repeats them over 3 channels."""
  images = np.repeat(np.pad(data.images, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)
  return ArrayDataset(
      images, data.labels, data.num_classes, data.mean * 3, data.std * 3, "fashion_mnist_small"
  )


def fashion_mnist_pool(
    per_class: int, root: PathLike | None = None, num_test: int | None = None
) -> tuple[ArrayDataset, ArrayDataset]:
  """Returns a class-balanced Fashion-MNIST training pool and the test set, as 32x32x3 images.

  The pool is ``per_class`` training images per class, drawn by ``rng = RandomState(0)`` as
  ``rng.choice(np.where(y_train == c)[0], per_class, replace=False)`` for ``c = 0 .. 9`` and
  sorted. The test set is the first ``num_test`` test images (all 10,000 by default). Images are
  32x32x3 uint8: the 28x28 images zero-padded by 2 pixels and repeated over 3 channels, with mean
  (0.2860,)*3 and std (0.3530,)*3.

  Args:
    per_class: pool images per class.
    root: the Fashion-MNIST directory (see :func:`load_fashion_mnist`); None uses its default.
    num_test: how many test images to keep.
  """
  train, test = load_fashion_mnist(FASHION_MNIST_ROOT if root is None else root)
  rng = np.random.RandomState(0)
  pool = np.sort(np.concatenate(
      [rng.choice(np.flatnonzero(train.labels == c), per_class, replace=False) for c in range(10)]
  ))
  test = test if num_test is None else test.subset(np.arange(num_test))
  return _to_32x32_rgb(train.subset(pool)), _to_32x32_rgb(test)


def fashion_mnist_small_pool(root: PathLike | None = None) -> tuple[ArrayDataset, ArrayDataset]:
  """Returns the ``fashion_mnist_small`` training pool (500 per class, 5,000) and all 10,000 test
  images (see :func:`fashion_mnist_pool`). The original model trains on the whole pool, without
  augmentation.
  """
  return fashion_mnist_pool(500, root)


def fashion_mnist_small(seed: int, root: PathLike | None = None) -> UnlearningSplit:
  """Returns the Fashion-MNIST setting's split for ``seed`` (the setting uses seeds 1 to 5).

  The forget set is the pool positions ``RandomState(seed).choice(5000, 500, replace=False)``;
  the other 4,500 form the retain set. The setting uses no augmentation.

  Args:
    seed: the forget-set seed.
    root: the Fashion-MNIST directory; None uses the default of :func:`load_fashion_mnist`.
  """
  pool, test = fashion_mnist_small_pool(root)
  forget_idx = random_forget_indices(len(pool), 500, seed)
  return make_split(pool, test, forget_idx)
