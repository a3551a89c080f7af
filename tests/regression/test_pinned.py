"""Today's classification numbers, pinned: every method x optimizer must reproduce pinned.json.

On the environment that recorded them (same jax, numpy and CPU) the parameters must be
bit-identical and the metrics equal. Elsewhere XLA may round differently, so the test asks only
for closeness there. CI installs Fashion-MNIST, so there the test never skips.
"""

import json
import os

import numpy as np
import pytest

from dualoptim_jax import data as D

import pinned_run

PINNED = json.loads(pinned_run.VALUES.read_text())
SAME_ENVIRONMENT = PINNED["environment"] == pinned_run.environment()
pytestmark = pytest.mark.skipif(
  not os.path.isdir(D.FASHION_MNIST_ROOT) and not os.environ.get("CI"),
  reason=f"no Fashion-MNIST in {D.FASHION_MNIST_ROOT}",
)


@pytest.fixture(scope="module")
def pretrained():
  return pinned_run.pretrained()


def assert_reproduced(got: dict, expected: dict, name: str):
  if SAME_ENVIRONMENT:
    assert got == expected, name
  else:
    np.testing.assert_allclose(
      [got["sum"], got["sum_sq"]], [expected["sum"], expected["sum_sq"]], rtol=1e-4, err_msg=name
    )
    for metric in ("UA", "RA", "TA", "MIA"):
      assert abs(got[metric] - expected[metric]) <= 1.0, (name, metric)
    got_epochs, expected_epochs = got.get("epochs", []), expected.get("epochs", [])
    assert [e for e, _ in got_epochs] == [e for e, _ in expected_epochs], name
    np.testing.assert_allclose(
      [s for _, s in got_epochs], [s for _, s in expected_epochs], rtol=1e-4, err_msg=name
    )


def test_the_original_model_is_reproduced(pretrained):
  assert_reproduced(pinned_run.numbers(*pretrained), PINNED["runs"]["Original"], "Original")


@pytest.mark.parametrize("method", ["FT", "GA", "RL", "SalUn", "SCRUB", "SFRon"])
def test_every_optimizer_reproduces_the_method(pretrained, method):
  got = pinned_run.unlearned(*pretrained, method)
  expected = {k: v for k, v in PINNED["runs"].items() if k.startswith(f"{method}-")}
  assert got.keys() == expected.keys()
  for name in expected:
    assert_reproduced(got[name], expected[name], name)
