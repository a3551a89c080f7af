"""An image-classification dataset held in host memory as uint8 arrays."""

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
  """Images and labels of one split, with the normalisation constants of its model.

  Images stay uint8 in memory; batching scales them to [0, 1]. As in the reference, the per-channel
  normalisation ``(x - mean) / std`` happens inside the model, so ``mean`` and ``std`` are carried
  here for the model to read, not applied to the data.

  Attributes:
    images: uint8 array of shape (N, H, W, C).
    labels: int32 array of shape (N,), each in ``[0, num_classes)``.
    num_classes: number of classes of the task (not of this split: a subset keeps it).
    mean: per-channel mean of the [0, 1]-scaled images, one value per channel.
    std: per-channel standard deviation, one value per channel.
    name: a short name, e.g. ``"cifar10"``.
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  name: str

  def __post_init__(self):
    images, labels = self.images, np.asarray(self.labels)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
      raise ValueError(
        f"{self.name}: images must be a uint8 array of shape (N, H, W, C), got "
        f"{getattr(images, 'dtype', type(images))} of shape {np.shape(images)}."
      )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(
        f"{self.name}: labels must be a 1-D integer array, got {labels.dtype} of shape "
        f"{labels.shape}."
      )
    if len(labels) != len(images):
      raise ValueError(f"{self.name}: {len(images)} images but {len(labels)} labels.")
    if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
      raise ValueError(
        f"{self.name}: labels must lie in [0, {self.num_classes}), got "
        f"[{labels.min()}, {labels.max()}]."
      )
    channels = images.shape[-1]
    if len(self.mean) != channels or len(self.std) != channels:
      raise ValueError(
        f"{self.name}: mean and std need one value per channel ({channels}), got "
        f"{len(self.mean)} and {len(self.std)}."
      )
    if min(self.std) <= 0:
      raise ValueError(f"{self.name}: std must be positive, got {self.std}.")
    object.__setattr__(self, "labels", labels.astype(np.int32, copy=False))
    object.__setattr__(self, "mean", tuple(map(float, self.mean)))
    object.__setattr__(self, "std", tuple(map(float, self.std)))

  def __len__(self) -> int:
    return len(self.labels)

  def __repr__(self) -> str:
    return (
      f"ArrayDataset(name={self.name!r}, images={self.images.shape}, "
      f"num_classes={self.num_classes}, mean={self.mean}, std={self.std})"
    )

  def subset(self, indices: Sequence[int] | np.ndarray) -> "ArrayDataset":
    """Returns the samples at ``indices``, in the order given (repeats allowed)."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
      raise ValueError(
        f"indices must be a 1-D integer array, got {idx.dtype} of shape {idx.shape}."
      )
    idx = idx.astype(np.intp, copy=False)
    return dataclasses.replace(self, images=self.images[idx], labels=self.labels[idx])
