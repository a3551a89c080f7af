"""Image datasets, forget/retain/test splits and fixed-shape batching for unlearning."""

from dualoptim_jax.data.batching import augment_batch
from dualoptim_jax.data.batching import cycle_batches
from dualoptim_jax.data.batching import epoch_batches
from dualoptim_jax.data.batching import epoch_indices
from dualoptim_jax.data.batching import eval_batches
from dualoptim_jax.data.batching import num_batches
from dualoptim_jax.data.batching import to_float
from dualoptim_jax.data.datasets import ArrayDataset
from dualoptim_jax.data.loaders import FASHION_MNIST_ROOT
from dualoptim_jax.data.loaders import load_cifar10
from dualoptim_jax.data.loaders import load_cifar100
from dualoptim_jax.data.loaders import load_dataset
from dualoptim_jax.data.loaders import load_fashion_mnist
from dualoptim_jax.data.loaders import load_svhn
from dualoptim_jax.data.loaders import load_tfds
from dualoptim_jax.data.loaders import load_tiny_imagenet
from dualoptim_jax.data.settings import FASHION_MNIST_SMALL_SEEDS
from dualoptim_jax.data.settings import fashion_mnist_pool
from dualoptim_jax.data.settings import fashion_mnist_small
from dualoptim_jax.data.settings import fashion_mnist_small_pool
from dualoptim_jax.data.splits import UnlearningSplit
from dualoptim_jax.data.splits import class_forget_indices
from dualoptim_jax.data.splits import holdout_split
from dualoptim_jax.data.splits import make_split
from dualoptim_jax.data.splits import random_forget_indices

__all__ = [
    "ArrayDataset",
    "FASHION_MNIST_ROOT",
    "FASHION_MNIST_SMALL_SEEDS",
    "UnlearningSplit",
    "augment_batch",
    "class_forget_indices",
    "cycle_batches",
    "epoch_batches",
    "epoch_indices",
    "eval_batches",
    "fashion_mnist_pool",
    "fashion_mnist_small",
    "fashion_mnist_small_pool",
    "holdout_split",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_fashion_mnist",
    "load_svhn",
    "load_tfds",
    "load_tiny_imagenet",
    "make_split",
    "num_batches",
    "random_forget_indices",
    "to_float",
]
