"""LLM unlearning: train-step time and optimizer-state bytes of DualOptim and DualOptim+ (32 and 8
bits) relative to AdamW, from one run.

- Step time: the `tofu_cpu` decoder (d256, 4 layers, BPE-4096 vocabulary, 4.2M parameters), a
  batch of 40 sequences of 96 tokens, one jitted and donated train step (forward, backward,
  clipping, update) of the GD retain loss and of the ME forget loss, each optimizer as
  `tasks.llm.unlearn.unlearn_tx` builds it; medians of interleaved calls.
- State bytes: the optimizer state of the same model, and (abstractly, nothing allocated) of
  Phi-1.5 and Llama-2-7B, whose per-device figures the README quotes.

Run: python benchmarks/llm_unlearn_step.py [--repeats 10]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from common import time_calls
from flax import nnx

from dualoptim_jax.core import init_state, make_step
from dualoptim_jax.models.decoder import Decoder, DecoderConfig
from dualoptim_jax.optim import FORGET, RETAIN
from dualoptim_jax.tasks.llm.losses import forget_loss, retain_loss
from dualoptim_jax.tasks.llm.unlearn import UnlearnConfig, unlearn_tx

OPTIMIZERS = {
  "shared": "AdamW (shared)",
  "dual": "DualOptim",
  "plus": "DualOptim+",
  "plus8": "DualOptim+ 8-bit",
}
MODELS = {
  "tofu_cpu": DecoderConfig(vocab_size=4096, dim=256, layers=4, heads=4, max_len=256),
  "Phi-1.5": DecoderConfig(
    vocab_size=51200,
    dim=2048,
    layers=24,
    heads=32,
    mlp_dim=8192,
    norm="layer",
    bias=True,
    parallel=True,
    rotary_dim=32,
    tie_embeddings=False,
    max_len=2048,
  ),
  "Llama-2-7B": DecoderConfig(
    vocab_size=32000,
    dim=4096,
    layers=32,
    heads=32,
    mlp_dim=11008,
    mlp="swiglu",
    tie_embeddings=False,
    max_len=4096,
  ),
}


def as_loss_fn(loss):
  """A `core.make_step` loss of an unlearning loss (no reference model)."""
  return lambda params, state, batch, rng, extras: (loss(params, state, batch, None), (state, {}))


def state_bytes(tx, params) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.eval_shape(tx.init, params)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  config = UnlearnConfig(lr=1e-4)
  txs = {name: unlearn_tx(config, name, 1.0, 300, 60) for name in OPTIMIZERS}
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}\n")

  print("Optimizer-state bytes (params fp32)")
  print(f"{'model':11s} {'params':>8s} " + " ".join(f"{OPTIMIZERS[n]:>17s}" for n in txs))
  for name, model_config in MODELS.items():
    params = nnx.eval_shape(lambda c=model_config: Decoder(c, rngs=nnx.Rngs(0)))
    params = nnx.state(params, nnx.Param)
    count = sum(x.size for x in jax.tree.leaves(params))
    sizes = {n: state_bytes(tx, params) for n, tx in txs.items()}
    cells = [f"{sizes[n] / 2**30:7.2f} GiB {sizes[n] / sizes['shared']:5.2f}x" for n in txs]
    print(f"{name:11s} {count / 1e6:7.0f}M " + " ".join(f"{c:>17s}" for c in cells))

  model = Decoder(MODELS["tofu_cpu"], rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 4096, (40, 96)).astype(np.int32)
  labels = ids.copy()
  labels[:, :24] = -100  # the question
  batch = {"input_ids": jnp.asarray(ids), "labels": jnp.asarray(labels)}
  fns, states = {}, {}
  for name, tx in txs.items():
    graphdef, state = init_state(model, tx)
    losses = {FORGET: forget_loss("ME", graphdef), RETAIN: retain_loss("GD", graphdef)}
    step = make_step(tx, {k: as_loss_fn(f) for k, f in losses.items()})
    states[name] = jax.tree.map(jnp.copy, state)
    for objective in (FORGET, RETAIN):

      def call(name=name, step=step, objective=objective):
        states[name], metrics = step(states[name], batch, objective=objective)
        return metrics["loss"]

      fns[name, objective] = call
  times = time_calls(fns, repeats=args.repeats, inner=2)
  print("\nTrain step, tofu_cpu model, batch 40 x 96 tokens (median s; ratio to AdamW)")
  print(
    f"{'optimizer':17s} {'forget (ME) s':>14s} {'ratio':>6s} {'retain (GD) s':>14s} {'ratio':>6s}"
  )
  for name in txs:
    f, r = times[name, FORGET], times[name, RETAIN]
    f0, r0 = times["shared", FORGET], times["shared", RETAIN]
    print(f"{OPTIMIZERS[name]:17s} {f:14.3f} {f / f0:6.3f} {r:14.3f} {r / r0:6.3f}")


if __name__ == "__main__":
  main()
