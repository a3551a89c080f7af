"""The pinned classification run: numbers that a refactor of the training code must not change.

A short pretraining of a width-8 ResNet-18 on ``fashion_mnist_tiny`` (1,000 Fashion-MNIST pool
images, 1,000 test images), then two unlearning epochs of every method with every optimizer from
it, on the forget set of seed 1, with augmentation in both (SFRon: its default iteration count,
20 steps). For each model it records UA / RA / TA / MIA, a SHA-256 of the parameter and BatchNorm
bytes (bit-identity), float64 sums (closeness), and the parameter sum after every epoch.

  python tests/regression/pinned_run.py            # prints the numbers
  python tests/regression/pinned_run.py --write    # records them in pinned.json

``tests/regression/test_pinned.py`` recomputes them and compares with ``pinned.json``.

The numbers are reproducible bit for bit only with the same packages, CPU and CPU count: XLA's
CPU arithmetic depends on how many CPUs the process may use, and these short runs amplify a
rounding difference (on one machine, 1 CPU against 2 moved the parameter sums by 1-3% and the
forget-set MIA by up to 20 points). So the numbers are always computed in a fresh process
restricted to ``CPUS`` CPUs (`compute_pinned`).
"""

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
import sys

import jax
import numpy as np
from flax import nnx

from dualoptim_jax.data import load_setting
from dualoptim_jax.models import ResNet18
from dualoptim_jax.tasks.classification import (
  METHODS,
  OPTIMIZERS,
  UnlearnConfig,
  evaluate,
  train_classifier,
  unlearn,
)

VALUES = pathlib.Path(__file__).with_name("pinned.json")
CONSTRAINTS = pathlib.Path(__file__).parents[2] / "constraints.txt"
CPUS = 2  # the number of CPUs the numbers are computed with
SEED = 1
CONFIG = UnlearnConfig(epochs=2, batch_size=128, retain_lr=0.01, augment=True)
FORGET_LR = {"sgd": 0.018, "adam": 3e-4, "dual": 3e-4}


def _cpuinfo(key: str) -> str:
  try:
    return next(
      line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith(key)
    )
  except (OSError, StopIteration):
    return ""


def environment() -> dict:
  """What the bits depend on besides the code and the CPU count (fixed by `compute_pinned`): Python,
  the packages of ``constraints.txt``, and the CPU (its model and a hash of its feature flags)."""
  lines = CONSTRAINTS.read_text().splitlines()
  pinned = [line.split("==")[0] for line in lines if "==" in line and not line.startswith("#")]
  return {
    "python": platform.python_version(),
    **{name: importlib.metadata.version(name) for name in pinned},
    "machine": platform.machine(),
    "cpu": _cpuinfo("model name"),
    "cpu flags": hashlib.sha256(_cpuinfo("flags").encode()).hexdigest()[:16],
  }


def fingerprint(params, model_state) -> dict:
  leaves = jax.tree.leaves((params, model_state))
  digest = hashlib.sha256()
  for leaf in leaves:
    digest.update(np.asarray(leaf).tobytes())
  flat = np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in leaves])
  return {
    "sha256": digest.hexdigest(),
    "sum": float(flat.sum()),
    "sum_sq": float(np.square(flat).sum()),
  }


def pretrained():
  """The split of seed ``SEED`` and the original model: ``(graphdef, original, split)``."""
  setting = load_setting("fashion_mnist_tiny")
  pool, split = setting.pool, setting.split(SEED)
  model = ResNet18(
    pool.num_classes,
    width=8,
    mean=pool.mean,
    std=pool.std,
    rngs=nnx.Rngs(jax.random.key(0, impl="rbg")),
  )
  graphdef, original = train_classifier(
    model, pool, epochs=2, batch_size=128, lr=0.1, seed=0, augment=True, progress=False
  )
  return graphdef, original, split


def numbers(graphdef, state, split) -> dict:
  """UA / RA / TA / MIA of a model and the fingerprint of its parameters."""
  return {**evaluate(graphdef, state, split), **fingerprint(state.params, state.model_state)}


def unlearned(graphdef, original, split, method: str) -> dict:
  """The numbers of ``method`` run from the original model with each optimizer."""
  result = {}
  for optimizer in OPTIMIZERS:
    config = dataclasses.replace(CONFIG, forget_lr=FORGET_LR[optimizer])
    epochs = []  # (epoch, parameter sum) at every on_epoch call

    def on_epoch(epoch, state, epochs=epochs):
      epochs.append([epoch, fingerprint(state.params, state.model_state)["sum"]])

    state = unlearn(
      METHODS[method], optimizer, graphdef, original, split, config, seed=SEED, on_epoch=on_epoch
    )
    result[f"{method}-{optimizer}"] = {**numbers(graphdef, state, split), "epochs": epochs}
  return result


def compute() -> dict:
  """Pretrains, unlearns with every method x optimizer, and returns every model's numbers."""
  graphdef, original, split = pretrained()
  result = {"Original": numbers(graphdef, original, split)}
  for method in METHODS:
    result.update(unlearned(graphdef, original, split, method))
  return result


def can_compute_pinned() -> bool:
  """Whether this process may use ``CPUS`` CPUs and set a child's CPUs (Linux)."""
  return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= CPUS


def compute_pinned() -> dict:
  """``{"environment", "runs"}`` computed in a fresh process that may use exactly ``CPUS`` CPUs,
  on the CPU backend, without this process's XLA or JAX flags."""
  if not can_compute_pinned():
    raise RuntimeError(f"the pinned numbers need {CPUS} CPUs and sched_setaffinity")
  cpus = sorted(os.sched_getaffinity(0))[:CPUS]
  # The child restricts itself before it imports jax (a preexec_fn would fork this process).
  bootstrap = (
    f"import os, runpy, sys; os.sched_setaffinity(0, {cpus}); "
    f"sys.argv = [{__file__!r}, '--in-process']; runpy.run_path(sys.argv[0], run_name='__main__')"
  )
  env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
  child = subprocess.run(
    [sys.executable, "-P", "-c", bootstrap],
    capture_output=True,
    text=True,
    env={**env, "JAX_PLATFORMS": "cpu"},
    timeout=3600,
  )
  if child.returncode:
    raise RuntimeError(f"the pinned run failed:\n{child.stderr[-4000:]}")
  try:
    return json.loads(child.stdout)
  except json.JSONDecodeError as error:
    raise RuntimeError(
      f"the pinned run printed no JSON ({error}): {child.stdout[:500]!r}\n{child.stderr[-2000:]}"
    ) from None


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--write", action="store_true", help=f"record the numbers in {VALUES.name}")
  parser.add_argument(
    "--in-process", action="store_true", help="compute here, with this process's CPUs"
  )
  args = parser.parse_args()
  if args.in_process and args.write:
    parser.error("--write records numbers of compute_pinned's process: drop --in-process")
  if args.in_process:
    values = {"environment": environment(), "runs": compute()}
  else:
    values = compute_pinned()
  text = json.dumps(values, indent=1)
  if args.write:
    VALUES.write_text(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
