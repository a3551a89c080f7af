"""Named unlearning settings, the one place where each is defined.

A setting is the pool the original model trains on, the test set and the rule that draws the
forget set of a seed, ``RandomState(seed + seed_offset).choice(len(pool), num_forget)``:

| name | pool | test | forget set (seed s) |
| --- | --- | --- | --- |
| ``fashion_mnist_tiny`` | Fashion-MNIST, 100 per class | first 1,000 | 100, ``RandomState(s)`` |
| ``fashion_mnist_small`` | Fashion-MNIST, 500 per class | all 10,000 | 500, ``RandomState(s)`` |
| ``cifar10`` ``cifar100`` ``svhn`` | train less 10% | test | 10%, ``RandomState(s - 1)`` |
| ``tiny_imagenet`` | train (100,000) | validation (10,000) | 10%, ``RandomState(s - 1)`` |

The CIFAR and SVHN hold-out is ``holdout_split(labels, 0.1, seed=1)``, 10% of every class.

The ``seed - 1`` is the reference's CIFAR convention; the Fashion-MNIST settings use the seed as is.

TOFU settings (`TOFU_SETTINGS`) name the pool of QA a target model learns; a split's forget and
retain sets are the pool's rows of TOFU's own split (``data/tofu.py``):

| name | pool | forget10 task 1 |
| --- | --- | --- |
| ``tofu_mini`` | 40 authors: 4 of forget10 task 1, 16 of task 2, retain10's 20 | 80 / 720 QA |
| ``tofu`` | all 200 authors (4,000 QA) | 400 / 3,600 QA |
"""

import dataclasses
import pathlib
from collections.abc import Callable

import numpy as np

from dualoptim_jax.data.datasets import ArrayDataset
from dualoptim_jax.data.loaders import (
  FASHION_MNIST_ROOT,
  PathLike,
  load_dataset,
  load_fashion_mnist,
)
from dualoptim_jax.data.splits import (
  UnlearningSplit,
  holdout_split,
  make_split,
  random_forget_indices,
)
from dualoptim_jax.data.tofu import TOFU_ROOT, TofuSplit, load_tofu, read_jsonl


@dataclasses.dataclass(frozen=True, eq=False)
class Setting:
  """A training pool, a test set and the draw of each seed's forget set.

  Attributes:
    name: the setting's name.
    pool: the set the original model is trained on.
    test: the test set.
    num_forget: the size of every forget set.
    seed_offset: the forget set of seed ``s`` is drawn with ``RandomState(s + seed_offset)``.
  """

  name: str
  pool: ArrayDataset
  test: ArrayDataset
  num_forget: int
  seed_offset: int = 0

  def forget_indices(self, seed: int) -> np.ndarray:
    """The pool positions of the forget set of ``seed``, in draw order."""
    return random_forget_indices(len(self.pool), self.num_forget, seed + self.seed_offset)

  def split(self, seed: int) -> UnlearningSplit:
    """The forget, retain and test sets of ``seed``."""
    return make_split(self.pool, self.test, self.forget_indices(seed))


def _to_32x32_rgb(data: ArrayDataset) -> ArrayDataset:
  """Zero-pads 28x28 greyscale images by 2 pixels and repeats them over 3 channels."""
  images = np.repeat(np.pad(data.images, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)
  return ArrayDataset(
    images, data.labels, data.num_classes, data.mean * 3, data.std * 3, "fashion_mnist"
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
  pool = np.sort(
    np.concatenate(
      [rng.choice(np.flatnonzero(train.labels == c), per_class, replace=False) for c in range(10)]
    )
  )
  if num_test is not None and num_test > len(test):
    raise ValueError(
      f"The Fashion-MNIST files hold {len(test)} test images, fewer than {num_test}."
    )
  test = test if num_test is None else test.subset(np.arange(num_test))
  return _to_32x32_rgb(train.subset(pool)), _to_32x32_rgb(test)


def _fashion_mnist(name: str, per_class: int, num_test: int | None) -> Callable:
  def load(root: PathLike | None) -> Setting:
    pool, test = fashion_mnist_pool(per_class, root, num_test)
    return Setting(name, pool, test, num_forget=len(pool) // 10)

  return load


def _reference_dataset(name: str, holdout: bool) -> Callable:
  def load(root: PathLike | None) -> Setting:
    train, test = load_dataset(name, root)
    pool = train.subset(holdout_split(train.labels, 0.1, seed=1)[0]) if holdout else train
    return Setting(name, pool, test, num_forget=len(pool) // 10, seed_offset=-1)

  return load


SETTINGS: dict[str, Callable[[PathLike | None], Setting]] = {
  "fashion_mnist_tiny": _fashion_mnist("fashion_mnist_tiny", 100, 1000),
  "fashion_mnist_small": _fashion_mnist("fashion_mnist_small", 500, None),
  "cifar10": _reference_dataset("cifar10", holdout=True),
  "cifar100": _reference_dataset("cifar100", holdout=True),
  "svhn": _reference_dataset("svhn", holdout=True),
  "tiny_imagenet": _reference_dataset("tiny_imagenet", holdout=False),
}


def load_setting(name: str, root: PathLike | None = None) -> Setting:
  """Loads the setting ``name`` from the dataset directory ``root`` (None: its default place)."""
  if name not in SETTINGS:
    raise ValueError(f"Unknown setting {name!r}; known settings: {', '.join(SETTINGS)}.")
  return SETTINGS[name](root)


@dataclasses.dataclass(frozen=True)
class TofuSetting:
  """A pool of TOFU QA and its unlearning splits.

  Attributes:
    name: the setting's name.
    pool: ``(file, task, rows)`` spans: the first ``rows`` QA of task ``task`` of ``file``
      (``task`` None: of the whole file); None: all 4,000 QA.
  """

  name: str
  pool: tuple[tuple[str, int | None, int], ...] | None = None

  def split(self, forget: str = "forget10", task: int = 1, root: PathLike | None = None):
    """TOFU's split ``forget``/``task`` restricted to the pool (forget evaluation set too)."""
    full = load_tofu(forget, task, root)
    if self.pool is None:
      return full
    root = pathlib.Path(TOFU_ROOT if root is None else root)
    keep = set()
    for file, span_task, rows in self.pool:
      chosen = [
        r
        for r in read_jsonl(root / f"{file}.json")
        if span_task in (None, int(r.get("task_id", 0)))
      ]
      keep |= {(r["question"], r["answer"]) for r in chosen[:rows]}

    def mine(rows):
      return [r for r in rows if (r["question"], r["answer"]) in keep]

    forget_rows = mine(full.forget)
    if not forget_rows:
      raise ValueError(f"The setting {self.name} holds no QA of {forget} task {task}.")
    return dataclasses.replace(
      full, forget=forget_rows, retain=mine(full.retain), forget_eval=mine(full.forget_eval)
    )


TOFU_SETTINGS = {
  "tofu_mini": TofuSetting(
    "tofu_mini", pool=(("forget10", 1, 80), ("forget10", 2, 320), ("retain10", None, 400))
  ),
  "tofu": TofuSetting("tofu"),
}


def load_tofu_setting(
  name: str, forget: str = "forget10", task: int = 1, root: PathLike | None = None
) -> TofuSplit:
  """The split ``forget``/``task`` of the TOFU setting ``name``, read from ``root``."""
  if name not in TOFU_SETTINGS:
    raise ValueError(f"Unknown TOFU setting {name!r}; known: {', '.join(TOFU_SETTINGS)}.")
  return TOFU_SETTINGS[name].split(forget, task, root)
