"""Shared pieces of the benchmarks: pytree shapes, timing and a streaming-bandwidth probe."""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def resnet18_shapes(num_classes: int = 10, width: int = 64) -> list[tuple[int, ...]]:
  """Leaf shapes of the CIFAR ResNet-18 (HWIO convs, BN scale/bias, dense): 62 leaves."""
  shapes = [(3, 3, 3, width), (width,), (width,)]
  c_in = width
  for stage, c_out in enumerate([width, 2 * width, 4 * width, 8 * width]):
    for block in range(2):
      stride = 2 if stage > 0 and block == 0 else 1
      shapes += [(3, 3, c_in, c_out), (c_out,), (c_out,), (3, 3, c_out, c_out), (c_out,), (c_out,)]
      if stride != 1 or c_in != c_out:
        shapes += [(1, 1, c_in, c_out), (c_out,), (c_out,)]
      c_in = c_out
  return shapes + [(c_in, num_classes), (num_classes,)]


def tree_of(shapes, seed: int = 0, scale: float = 1.0):
  keys = jax.random.split(jax.random.key(seed), len(shapes))
  return {
    f"p{i:03d}": scale * jax.random.normal(k, s, jnp.float32)
    for i, (k, s) in enumerate(zip(keys, shapes, strict=True))
  }


def num_elements(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def time_calls(fns: dict, repeats: int = 30, inner: int = 5) -> dict[str, float]:
  """Median seconds per call of each zero-argument callable, interleaved to share machine noise.

  Each callable must run one step and return something to block on.
  """
  for fn in fns.values():  # compile and warm up
    jax.block_until_ready(fn())
  samples = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      for _ in range(inner):
        out = fn()
      jax.block_until_ready(out)
      samples[name].append((time.perf_counter() - start) / inner)
  return {name: statistics.median(s) for name, s in samples.items()}


def streaming_bandwidth(num_floats: int, repeats: int = 30) -> float:
  """Bytes/s of a donated float32 triad y <- a * x + y (reads 8, writes 4 bytes per element)."""
  triad = jax.jit(lambda x, y: 1.0001 * x + y, donate_argnums=1)
  x = jnp.ones(num_floats, jnp.float32)
  box = {"y": jnp.zeros(num_floats, jnp.float32)}

  def run():
    box["y"] = triad(x, box["y"])
    return box["y"]

  seconds = time_calls({"triad": run}, repeats=repeats)["triad"]
  return 12 * num_floats / seconds
