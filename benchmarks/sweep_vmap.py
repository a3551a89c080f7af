"""A forget-lr sweep as a loop of runs against one vmapped program (`unlearn_stacked`).

RL with DualOptim on a width-8 ResNet-18 over synthetic 28x28 images (forget 64, retain 512,
batch 64, one epoch: 9 steps), at ``--points`` forget learning rates. Both ways run twice, with
XLA's persistent compilation cache on (as the experiment runner has it), and the second round is
timed: wall seconds and process CPU seconds, side by side, and their ratio vmap / loop.

Run: python benchmarks/sweep_vmap.py [--points 4] [--width 8]
"""

import argparse
import tempfile
import time

import jax
import numpy as np
import optax
from flax import nnx

from dualoptim_jax.core import init_state
from dualoptim_jax.data import ArrayDataset, make_split
from dualoptim_jax.models import ResNet18
from dualoptim_jax.tasks.classification import RL, UnlearnConfig, unlearn, unlearn_stacked


def problem(width: int):
  rng = np.random.default_rng(0)
  n = 576
  images = rng.integers(0, 256, (n, 28, 28, 1)).astype(np.uint8)
  labels = rng.integers(0, 10, n).astype(np.int32)
  pool = ArrayDataset(images, labels, 10, (0.5,), (0.25,), "synthetic")
  split = make_split(pool, pool, rng.choice(n, 64, replace=False))
  model = ResNet18(10, width=width, mean=(0.5,), std=(0.25,), rngs=nnx.Rngs(0))
  graphdef, state = init_state(model, optax.sgd(0.1), 0)
  return graphdef, state, split


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--points", type=int, default=4)
  parser.add_argument("--width", type=int, default=8)
  args = parser.parse_args()
  jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp())
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  graphdef, original, split = problem(args.width)
  lrs = [1e-4 * 3**i for i in range(args.points)]
  points = [(split, UnlearnConfig(epochs=1, batch_size=64, forget_lr=lr), 1) for lr in lrs]

  def loop():
    return [unlearn(RL(), "dual", graphdef, original, s, c, seed) for s, c, seed in points]

  def vmapped():
    return unlearn_stacked(RL(), "dual", graphdef, original, points)

  timings = {}
  for name, fn in (("loop", loop), ("vmap", vmapped)) * 2:  # the second round is timed
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    timings[name] = (time.perf_counter() - wall, time.process_time() - cpu)
  (loop_wall, loop_cpu), (vmap_wall, vmap_cpu) = timings["loop"], timings["vmap"]
  print(f"{args.points} forget lrs, RL + DualOptim, ResNet-18 width {args.width}, 9 steps each")
  print(f"{jax.devices()[0].platform}: {jax.device_count()} device(s)")
  print("| way | wall s | CPU s |\n| --- | ---: | ---: |")
  print(f"| loop | {loop_wall:.2f} | {loop_cpu:.2f} |\n| vmap | {vmap_wall:.2f} | {vmap_cpu:.2f} |")
  print(f"vmap / loop: wall {vmap_wall / loop_wall:.2f}, CPU {vmap_cpu / loop_cpu:.2f}")


if __name__ == "__main__":
  main()
