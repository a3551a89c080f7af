"""Today's classification numbers, pinned: every method x optimizer must reproduce pinned.json.

`pinned_run.compute_pinned` recomputes every model in a fresh process restricted to
`pinned_run.CPUS` CPUs. With the environment that recorded them (the same packages and CPU) the
parameters must be bit-identical and the metrics equal. Nothing looser is meaningful: these short
runs amplify a rounding difference to whole percent (see `pinned_run`), so in another environment
the test skips, naming what differs (`setup.sh` installs the recorded package versions,
`constraints.txt`, so on a set-up machine only the CPU can differ), and so does it on a machine
with fewer than `pinned_run.CPUS` CPUs. CI installs Fashion-MNIST, so
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
  if not pinned_run.can_compute_pinned():
    pytest.skip(f"the pinned run needs {pinned_run.CPUS} CPUs and sched_setaffinity")
  recorded, here = PINNED["environment"], pinned_run.environment()
  differ = {k: (recorded.get(k), here.get(k)) for k in recorded.keys() | here.keys()}
  differ = {k: v for k, v in differ.items() if v[0] != v[1]}
  if differ:
    pytest.skip(f"recorded in another environment (recorded, here): {differ}")
  got = pinned_run.compute_pinned()
  assert got["environment"] == recorded
  assert got["runs"].keys() == PINNED["runs"].keys()
  changed = [name for name in PINNED["runs"] if got["runs"][name] != PINNED["runs"][name]]
  assert not changed, f"these models changed: {changed}"
