"""Host-side data: image datasets, forget/retain/test splits, fixed-shape batching, the named
unlearning settings, and TOFU (``dualoptim_jax.data.tofu``)."""

from dualoptim_jax.data.batching import (
  augment_batch,
  cycle_batches,
  epoch_batches,
  epoch_indices,
  eval_batches,
  num_batches,
  to_float,
)
from dualoptim_jax.data.datasets import ArrayDataset
from dualoptim_jax.data.loaders import (
  FASHION_MNIST_ROOT,
  load_cifar10,
  load_cifar100,
  load_dataset,
  load_fashion_mnist,
  load_svhn,
  load_tfds,
  load_tiny_imagenet,
)
from dualoptim_jax.data.settings import SETTINGS, Setting, fashion_mnist_pool, load_setting
from dualoptim_jax.data.splits import (
  UnlearningSplit,
  holdout_split,
  make_split,
  random_forget_indices,
)

__all__ = [
  "ArrayDataset",
  "FASHION_MNIST_ROOT",
  "SETTINGS",
  "Setting",
  "UnlearningSplit",
  "augment_batch",
  "cycle_batches",
  "epoch_batches",
  "epoch_indices",
  "eval_batches",
  "fashion_mnist_pool",
  "holdout_split",
  "load_cifar10",
  "load_cifar100",
  "load_dataset",
  "load_fashion_mnist",
  "load_setting",
  "load_svhn",
  "load_tfds",
  "load_tiny_imagenet",
  "make_split",
  "num_batches",
  "random_forget_indices",
  "to_float",
]
