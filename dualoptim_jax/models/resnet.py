"""CIFAR ResNet-18 in Flax NNX.

The CIFAR variant of He et al. (2016) used by the unlearning literature: a
3x3 stride-1 stem without max-pool, four stages of two ``BasicBlock`` s with
widths ``w, 2w, 4w, 8w`` and strides ``1, 2, 2, 2``, global average pooling
and a linear head. Per-channel normalisation ``(x - mean) / std`` is part of
the model, with ``mean`` and ``std`` stored as static constants: they are
neither ``nnx.Param`` nor ``nnx.BatchStat``, so no optimizer sees them.

Train / eval mode follows NNX: ``model.train()`` makes ``BatchNorm`` use batch
statistics and update its running averages, ``model.eval()`` makes it use the
running averages. For jitted steps, split the model functionally::

  graphdef, params, batch_stats = nnx.split(model, nnx.Param, ...)
  logits, batch_stats = apply(graphdef, params, batch_stats, x, train=True)
  nnx.update(model, params, batch_stats)  # or nnx.merge(graphdef, params, batch_stats)
"""

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# Kaiming-normal, fan_out, ReLU gain: std = sqrt(2 / (kh * kw * out)).
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _uniform(bound: float):
  """``U(-bound, bound)`` initializer."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _conv(cin: int, cout: int, kernel: int, stride: int, *, rngs: nnx.Rngs):
  """Bias-free convolution with torch padding ``kernel // 2``."""
  return nnx.Conv(
    cin,
    cout,
    (kernel, kernel),
    strides=stride,
    padding=kernel // 2,
    use_bias=False,
    kernel_init=_conv_init,
    rngs=rngs,
  )


def _bn(features: int, *, rngs: nnx.Rngs):
  """BatchNorm with torch defaults (momentum 0.1, i.e. decay 0.9; eps 1e-5).

  One difference remains: the running variance tracks the biased batch
  variance, where torch uses the unbiased one (a factor ``n / (n - 1)`` with
  ``n = batch * H * W``).
  """
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


class BasicBlock(nnx.Module):
  """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

  The shortcut is the identity, or a 1x1 convolution plus BatchNorm when the
  stride or the number of channels changes.
  """

  def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = _conv(cin, cout, 3, stride, rngs=rngs)
    self.bn1 = _bn(cout, rngs=rngs)
    self.conv2 = _conv(cout, cout, 3, 1, rngs=rngs)
    self.bn2 = _bn(cout, rngs=rngs)
    if stride != 1 or cin != cout:
      self.downsample = nnx.Sequential(_conv(cin, cout, 1, stride, rngs=rngs), _bn(cout, rngs=rngs))
    else:
      self.downsample = None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    shortcut = x if self.downsample is None else self.downsample(x)
    return nnx.relu(y + shortcut)


class ResNet18(nnx.Module):
  """CIFAR ResNet-18 on NHWC float inputs in ``[0, 1]``.

  Args:
    num_classes: number of output logits.
    width: channels of the stem and first stage (64 for the standard model).
    mean: per-channel input mean; its length is the number of input channels.
    std: per-channel input standard deviation, same length as ``mean``.
    rngs: random streams for initialisation.
  """

  def __init__(
    self,
    num_classes: int,
    *,
    width: int = 64,
    mean: Sequence[float],
    std: Sequence[float],
    rngs: nnx.Rngs,
  ):
    if num_classes < 1:
      raise ValueError(f"num_classes must be positive, got {num_classes}.")
    if width < 1:
      raise ValueError(f"width must be positive, got {width}.")
    mean = tuple(float(m) for m in mean)
    std = tuple(float(s) for s in std)
    if not mean or len(mean) != len(std):
      raise ValueError(
        "mean and std must be non-empty and of equal length, got "
        f"{len(mean)} and {len(std)} values."
      )
    if min(std) <= 0:
      raise ValueError(f"std must be positive, got {std}.")
    self.mean = mean
    self.std = std

    self.conv1 = _conv(len(mean), width, 3, 1, rngs=rngs)
    self.bn1 = _bn(width, rngs=rngs)
    blocks = []
    cin = width
    for i, stride in enumerate((1, 2, 2, 2)):
      cout = width * 2**i
      blocks += [
        BasicBlock(cin, cout, stride, rngs=rngs),
        BasicBlock(cout, cout, 1, rngs=rngs),
      ]
      cin = cout
    self.blocks = nnx.List(blocks)
    # torch.nn.Linear default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / math.sqrt(cin)
    self.fc = nnx.Linear(
      cin,
      num_classes,
      kernel_init=_uniform(bound),
      bias_init=_uniform(bound),
      rngs=rngs,
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits of shape ``(batch, num_classes)`` for ``x`` of shape ``(batch, H, W, C)``."""
    if x.ndim != 4 or x.shape[-1] != len(self.mean):
      raise ValueError(f"Expected NHWC input with {len(self.mean)} channels, got shape {x.shape}.")
    x = (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)
    x = nnx.relu(self.bn1(self.conv1(x)))
    for block in self.blocks:
      x = block(x)
    return self.fc(jnp.mean(x, axis=(1, 2)))


@functools.partial(jax.jit, static_argnames="train")
def apply(
  graphdef: nnx.GraphDef,
  params: nnx.State,
  batch_stats: nnx.State,
  x: jax.Array,
  *,
  train: bool,
) -> tuple[jax.Array, nnx.State]:
  """Pure, jitted forward pass of a split model: ``(logits, new model state)``.

  The model state is every variable that is not an ``nnx.Param`` (here the
  BatchNorm statistics), as ``core.init_state`` splits it. With ``train=True``
  BatchNorm normalises with batch statistics and the returned running
  statistics are updated (``r <- 0.9 r + 0.1 batch``); with ``train=False`` it
  uses ``batch_stats`` and returns them unchanged. The mode stored in
  ``graphdef`` is ignored.
  """
  model = nnx.merge(graphdef, params, batch_stats)
  if train:
    model.train()
  else:
    model.eval()
  logits = model(x)
  return logits, nnx.state(model, nnx.Not(nnx.Param))
