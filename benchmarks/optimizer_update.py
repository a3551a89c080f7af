"""Cost of the dual wrapper: each branch of `dualoptim` against its Optax transform alone.

For a ResNet-18-shaped pytree (11.2M float32 parameters in 62 leaves) it times the jitted,
state-donated step (update and apply, params and state donated) of
  - DualOptim's forget branch vs `optax.adamw` alone (28 bytes moved per parameter:
    read g, theta, m, v; write m, v, theta),
  - DualOptim's retain branch vs `sgd_l2` alone (20 bytes: read g, theta, b; write b, theta),
and prints ratios measured side by side in one run, plus each time against the memory-bandwidth
bound (bytes moved / a measured streaming bandwidth).

Run: python benchmarks/optimizer_update.py [--repeats 30]
"""

import argparse
import functools

import jax
import optax
from common import num_elements, resnet18_shapes, streaming_bandwidth, time_calls, tree_of

import dualoptim_jax as dj


def donated_step(tx, objective=None):
  """One optimizer step that applies its update, with params and state donated."""
  kwargs = {} if objective is None else {"objective": objective}

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params, **kwargs)
    return optax.apply_updates(params, updates), state

  return step


def runner(step, params, state, grads):
  box = {"params": jax.tree.map(lambda x: x.copy(), params), "state": state}

  def run():
    box["params"], box["state"] = step(box["params"], box["state"], grads)
    return box["params"]

  return run


def copies_in_hlo(step, *args) -> int:
  """Number of copy instructions in the compiled step (each one moves a whole leaf)."""
  hlo = step.lower(*args).compile().as_text()
  return sum(" copy(" in line for line in hlo.splitlines())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args()

  shapes = resnet18_shapes()
  params, grads = tree_of(shapes, 0, 0.05), tree_of(shapes, 1, 1e-3)
  n = num_elements(params)
  print(
    f"jax {jax.__version__} on {jax.devices()[0].platform}: {len(shapes)} leaves, "
    f"{n / 1e6:.2f}M parameters"
  )

  lr_f, lr_r = 1e-4, 1e-2
  dual = dj.dualoptim(lr_f, lr_r)
  cases = {
    "forget": (dual, optax.adamw(lr_f, 0.9, 0.999, 1e-8, weight_decay=0.05), 28),
    "retain": (dual, dj.sgd_l2(lr_r), 20),
  }
  bandwidth = streaming_bandwidth(4 * n)
  print(f"streaming bandwidth (donated triad): {bandwidth / 1e9:.1f} GB/s\n")
  print(
    f"{'branch':8s} {'alone ms':>9s} {'dual ms':>8s} {'dual/alone':>10s} "
    f"{'bound ms':>9s} {'alone/bound':>11s} {'dual/bound':>10s} {'copies':>6s}"
  )
  for objective, (tx_dual, tx_alone, bytes_per_param) in cases.items():
    dual_step, alone_step = donated_step(tx_dual, objective), donated_step(tx_alone)
    dual_state = tx_dual.init(params)
    # Give the other branch real state so pass-through is exercised.
    other = "retain" if objective == "forget" else "forget"
    _, dual_state = tx_dual.update(grads, dual_state, params, objective=other)
    copies = copies_in_hlo(dual_step, params, dual_state, grads)
    times = time_calls(
      {
        "alone": runner(alone_step, params, tx_alone.init(params), grads),
        "dual": runner(dual_step, params, dual_state, grads),
      },
      repeats=args.repeats,
    )
    bound = bytes_per_param * n / bandwidth
    print(
      f"{objective:8s} {1e3 * times['alone']:9.2f} {1e3 * times['dual']:8.2f} "
      f"{times['dual'] / times['alone']:10.3f} {1e3 * bound:9.2f} "
      f"{times['alone'] / bound:11.2f} {times['dual'] / bound:10.2f} {copies:6d}"
    )


if __name__ == "__main__":
  main()
