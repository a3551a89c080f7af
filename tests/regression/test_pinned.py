"""Today's classification numbers, pinned: every method x optimizer must reproduce pinned.json.

`pinned_run.compute_pinned` recomputes every model in a fresh process restricted to
`pinned_run.CPUS` CPUs. With the environment that recorded them (the same packages and CPU) the
parameters must be bit-identical and the metrics equal. Nothing looser is meaningful: these short
runs amplify a rounding difference to whole percent (see `pinned_run`), so in another environment
the test skips and names both environments (`setup.sh` installs the recorded package versions,
`constraints.txt`, so only another CPU model or count leads there). CI installs Fashion-MNIST, so
there the test never skips for want of data.
"""

import json
import os

import pytest

from dualoptim_jax import data as D

import pinned_run

PINNED = json.loads(pinned_run.VALUES.read_text())
pytestmark = pytest.mark.skipif(
  not os.path.isdir(D.FASHION_MNIST_ROOT) and not os.environ.get("CI"),
  reason=f"no Fashion-MNIST in {D.FASHION_MNIST_ROOT}",
)


def test_every_model_is_reproduced_bit_for_bit():
  got = pinned_run.compute_pinned()
  if got["environment"] != PINNED["environment"]:
    pytest.skip(f"recorded in {PINNED['environment']}, computed in {got['environment']}")
  assert got["runs"].keys() == PINNED["runs"].keys()
  differ = [name for name in PINNED["runs"] if got["runs"][name] != PINNED["runs"][name]]
  assert not differ, f"these models changed: {differ}"
