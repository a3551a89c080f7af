"""Host-side numpy batching in which every batch has the same shape, so a jitted step compiles once.

Differences from the reference's PyTorch loaders, all to keep one batch shape:

- A training epoch of n samples has ``ceil(n / batch_size)`` batches, as the reference's loaders do,
  but its last batch is completed to ``batch_size`` with samples drawn without replacement from the
  rest of the epoch, instead of being smaller. Every sample is seen at least once per epoch, and a
  few twice. A dataset smaller than one batch is repeated to fill it.
- Evaluation pads its last batch and returns a validity mask, so every sample counts exactly once.
"""

from collections.abc import Iterator

import numpy as np

from dualoptim_jax.data.datasets import ArrayDataset

Batch = tuple[np.ndarray, np.ndarray]


def to_float(images: np.ndarray) -> np.ndarray:
  """Scales uint8 images to float32 in [0, 1], as torchvision's ``ToTensor`` does."""
  return images.astype(np.float32) / np.float32(255)


def augment_batch(images: np.ndarray, rng: np.random.Generator, *, padding: int = 4) -> np.ndarray:
  """Random crop with zero padding, then random horizontal flip, drawn per image.

  torchvision's ``RandomCrop(size, padding=padding)`` then ``RandomHorizontalFlip()``: each image is
  zero-padded by ``padding`` pixels on every side, an HxW window at offsets drawn uniformly from
  ``0 .. 2 * padding`` is cut out, and flipped left-right with probability 1/2.

  Args:
    images: uint8 array of shape (N, H, W, C).
    rng: the generator of the crop offsets and flips.
    padding: the zero padding on each side.

  Returns:
    The augmented uint8 images, same shape.
  """
  if images.ndim != 4:
    raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}.")
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  top, left = rng.integers(0, 2 * padding + 1, size=(2, n)).tolist()
  flip = (rng.random(n) < 0.5).tolist()
  out = np.empty_like(images)
  for i in range(n):  # Faster than a single fancy-index gather over the batch.
    crop = padded[i, top[i] : top[i] + h, left[i] : left[i] + w]
    out[i] = crop[:, ::-1] if flip[i] else crop
  return out


def num_batches(n: int, batch_size: int) -> int:
  """Returns ``ceil(n / batch_size)``, the number of batches of an epoch of n samples."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  return -(-n // batch_size)


def epoch_indices(
  n: int, batch_size: int, rng: np.random.Generator, *, shuffle: bool = True
) -> np.ndarray:
  """Returns the sample positions of one training epoch, shape ``(num_batches(n, B), B)``.

  The positions are a permutation of ``0 .. n-1`` (or ``0 .. n-1`` in order if not ``shuffle``).
  A last partial batch is completed with positions drawn from ``rng`` without replacement among
  the earlier batches; if ``n < batch_size``, the positions repeat cyclically to fill one batch.
  """
  count = num_batches(n, batch_size)
  if n < 1:
    raise ValueError("Cannot batch an empty dataset.")
  order = rng.permutation(n) if shuffle else np.arange(n)
  if n < batch_size:
    return np.resize(order, (1, batch_size))
  last = n % batch_size
  if last:
    filler = rng.choice(order[: n - last], batch_size - last, replace=False)
    order = np.concatenate([order, filler])
  return order.reshape(count, batch_size)


def epoch_batches(
  dataset: ArrayDataset,
  batch_size: int,
  rng: np.random.Generator,
  *,
  shuffle: bool = True,
  augment: bool = False,
) -> Iterator[Batch]:
  """Yields one epoch of ``(images, labels)`` batches: float32 NHWC in [0, 1] and int32.

  Every batch has exactly ``batch_size`` rows; see :func:`epoch_indices` for the order. ``rng``
  draws the order and, with ``augment``, the :func:`augment_batch` crops and flips.
  """
  for idx in epoch_indices(len(dataset), batch_size, rng, shuffle=shuffle):
    images = dataset.images[idx]
    if augment:
      images = augment_batch(images, rng)
    yield to_float(images), dataset.labels[idx]


def cycle_batches(
  dataset: ArrayDataset,
  batch_size: int,
  rng: np.random.Generator,
  *,
  shuffle: bool = True,
  augment: bool = False,
) -> Iterator[Batch]:
  """Yields :func:`epoch_batches` forever, with a new order every epoch."""
  while True:
    yield from epoch_batches(dataset, batch_size, rng, shuffle=shuffle, augment=augment)


def eval_batches(
  dataset: ArrayDataset, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Yields ``(images, labels, valid)`` over the dataset in order, without augmentation.

  The last batch is padded with zero images and label 0 to ``batch_size`` rows; ``valid`` is a
  boolean mask of the real rows, so masked sums count every sample exactly once.
  """
  for start in range(0, num_batches(len(dataset), batch_size) * batch_size, batch_size):
    images = dataset.images[start : start + batch_size]
    labels = dataset.labels[start : start + batch_size]
    pad = batch_size - len(labels)
    if pad:
      images = np.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0)))
      labels = np.pad(labels, (0, pad))
    yield to_float(images), labels, np.arange(batch_size) < batch_size - pad
