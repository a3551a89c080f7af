"""DualOptim+ in fp32 and with 8-bit blockwise states: state memory and update time.

Prints, from one run:
  - optimizer-state bytes of 8-bit / fp32 DualOptim+ for a ResNet-18-shaped pytree (11.2M
    parameters, 62 leaves; leaves under 4096 elements stay fp32) and a 100M-parameter pytree
    (target <= 0.26x; the limit is (1 + 4/256) / 4 = 0.254x);
  - the jitted, donated update time (update and apply) of fp32 and 8-bit DualOptim+ on the
    ResNet-18 tree, against the fp32 memory-bandwidth bound of 44 bytes per parameter (read g,
    theta, M, V, m_k, v_k; write theta, M, V, m_k, v_k) at a measured streaming bandwidth.

Run: python benchmarks/plus_state_8bit.py [--repeats 20] [--time-100m]
"""

import argparse
import math

import jax
from common import num_elements, resnet18_shapes, streaming_bandwidth, time_calls, tree_of
from optimizer_update import copies_in_hlo, donated_step, runner

import dualoptim_jax as dj


def state_bytes(tx, params) -> int:
  shapes = jax.eval_shape(tx.init, params)
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def hundred_million_shapes() -> list[tuple[int, ...]]:
  """A 100M-parameter transformer-like tree: an embedding, 10 blocks of width 768, a remainder."""
  d, blocks = 768, 10
  per_block = [(d, d)] * 4 + [(d, 4 * d), (4 * d, d), (d,), (d,)]
  shapes = [(32000, d)] + per_block * blocks
  return shapes + [(100_000_000 - sum(math.prod(s) for s in shapes),)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--time-100m", action="store_true", help="also time the 100M tree")
  args = parser.parse_args()

  fp32, int8 = dj.dualoptim_plus(1e-3), dj.dualoptim_plus(1e-3, state_bits=8)
  trees = {
    "resnet18": resnet18_shapes(),
    "100M": hundred_million_shapes(),
  }
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}\n")
  print(f"{'tree':9s} {'params':>8s} {'fp32 state MB':>14s} {'8-bit state MB':>15s} {'ratio':>7s}")
  for name, shapes in trees.items():
    abstract = {f"p{i:03d}": jax.ShapeDtypeStruct(s, "float32") for i, s in enumerate(shapes)}
    n = num_elements(abstract)
    b32, b8 = state_bytes(fp32, abstract), state_bytes(int8, abstract)
    print(f"{name:9s} {n / 1e6:7.1f}M {b32 / 1e6:14.1f} {b8 / 1e6:15.1f} {b8 / b32:7.3f}")

  timed = ["resnet18"] + (["100M"] if args.time_100m else [])
  for name in timed:
    params, grads = tree_of(trees[name], 0, 0.05), tree_of(trees[name], 1, 1e-3)
    n = num_elements(params)
    bandwidth = streaming_bandwidth(min(4 * n, 50_000_000))
    bound = 44 * n / bandwidth
    print(
      f"\n{name}: streaming bandwidth {bandwidth / 1e9:.1f} GB/s, "
      f"fp32 bound {1e3 * bound:.2f} ms per update"
    )
    print(
      f"{'objective':9s} {'fp32 ms':>8s} {'8-bit ms':>9s} {'8bit/fp32':>9s} "
      f"{'fp32/bound':>10s} {'8bit/bound':>10s} {'copies':>6s}"
    )
    for objective in ("forget", "retain"):
      steps, runs = {}, {}
      for bits, tx in (("fp32", fp32), ("8bit", int8)):
        state = tx.init(params)
        _, state = tx.update(grads, state, params, objective="forget")  # non-trivial state
        steps[bits] = donated_step(tx, objective)
        runs[bits] = runner(steps[bits], params, state, grads)
      copies = copies_in_hlo(steps["fp32"], params, fp32.init(params), grads)
      times = time_calls(runs, repeats=args.repeats)
      print(
        f"{objective:9s} {1e3 * times['fp32']:8.2f} {1e3 * times['8bit']:9.2f} "
        f"{times['8bit'] / times['fp32']:9.2f} {times['fp32'] / bound:10.2f} "
        f"{times['8bit'] / bound:10.2f} {copies:6d}"
      )


if __name__ == "__main__":
  main()
