"""Tests for the metric-curve plot."""

import numpy as np
import pytest

from dualoptim_jax.eval import RETRAIN_REFS, plot_metrics_over_epochs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _curves(seeds=3, epochs=5):
  rng = np.random.default_rng(0)
  return {
      "SFRon (sgd)": rng.uniform(0, 100, (seeds, epochs, 4)),
      "SFRon (dual)": rng.uniform(0, 100, (seeds, epochs, 4)),
  }


def test_writes_png(tmp_path):
  path = tmp_path / "plots" / "curves.png"
  plot_metrics_over_epochs(_curves(), path, ref=RETRAIN_REFS["cifar10_sgd"])
  data = path.read_bytes()
  assert len(data) > len(PNG_SIGNATURE) and data.startswith(PNG_SIGNATURE)


def test_custom_epochs(tmp_path):
  path = tmp_path / "curves.png"
  plot_metrics_over_epochs(_curves(epochs=3), path, epochs=[0, 5, 10])
  assert path.read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    "curves, kwargs",
    [
        ({"a": np.zeros((3, 5, 3))}, {}),
        ({"a": np.zeros((5, 4))}, {}),
        ({"a": np.zeros((3, 0, 4))}, {}),
        ({"a": np.zeros((3, 5, 4))}, {"epochs": [1, 2, 3]}),
        ({"a": np.zeros((3, 5, 4))}, {"ref": {"UA": 1.0}}),
        ({}, {}),
    ],
)
def test_bad_input(tmp_path, curves, kwargs):
  with pytest.raises(ValueError):
    plot_metrics_over_epochs(curves, tmp_path / "x.png", **kwargs)
  assert not (tmp_path / "x.png").exists()
