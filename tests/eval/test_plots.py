"""The metric-curve plot: what each panel draws, and refused input."""

import numpy as np
import pytest
from PIL import Image

from dualoptim_jax.eval import Metric, plot_curves

METRICS = (Metric("UA"), Metric("RA"), Metric("TA", "higher"), Metric("MIA"))
RT = {"UA": 5.0, "RA": 100.0, "TA": 94.0, "MIA": 76.0}


def _curves(seeds=3, points=5):
  rng = np.random.default_rng(0)
  return {
    "SFRon (sgd)": rng.uniform(0, 100, (seeds, points, 4)),
    "SFRon (dual)": rng.uniform(0, 100, (seeds, points, 4)),
  }


def test_each_panel_draws_the_seed_mean_band_and_reference(tmp_path):
  curves = _curves()
  path = tmp_path / "plots" / "curves.png"
  fig = plot_curves(curves, path, METRICS, title="default: seeds [1, 2, 3]", ref=RT)
  assert fig._suptitle.get_text() == "default: seeds [1, 2, 3]"
  assert [ax.get_title() for ax in fig.axes] == ["UA", "RA", "TA ↑", "MIA"]
  for i, ax in enumerate(fig.axes):
    sgd, dual, rt = ax.lines
    np.testing.assert_array_equal(sgd.get_xdata(), [0, 1, 2, 3, 4])  # epoch 0: before the run
    np.testing.assert_allclose(sgd.get_ydata(), curves["SFRon (sgd)"][..., i].mean(0))
    np.testing.assert_allclose(dual.get_ydata(), curves["SFRon (dual)"][..., i].mean(0))
    assert list(rt.get_ydata()) == [RT[METRICS[i].name]] * 2
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    std = curves["SFRon (sgd)"][..., i].std(0)  # population std, as in the tables
    mean = curves["SFRon (sgd)"][..., i].mean(0)
    np.testing.assert_allclose(
      [band.min(), band.max()], [(mean - std).min(), (mean + std).max()], rtol=1e-6
    )
  assert Image.open(path).size == (1600, 340)


def test_custom_x_values(tmp_path):
  fig = plot_curves(
    _curves(points=3), tmp_path / "curves.png", METRICS, title="t", epochs=[0, 5, 10]
  )
  np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), [0, 5, 10])


@pytest.mark.parametrize(
  "curves, kwargs, message",
  [
    ({"a": np.zeros((3, 5, 3))}, {}, r"shape \(seeds, points, 4\)"),
    ({"a": np.zeros((5, 4))}, {}, r"shape \(seeds, points, 4\)"),
    ({"a": np.zeros((3, 0, 4))}, {}, r"shape \(seeds, points, 4\)"),
    ({"a": np.zeros((3, 5, 4))}, {"epochs": [1, 2, 3]}, "3 x values"),
    ({"a": np.zeros((3, 5, 4))}, {"ref": {"UA": 1.0}}, "ref must hold"),
    ({}, {}, "at least one curve"),
  ],
)
def test_bad_input(tmp_path, curves, kwargs, message):
  with pytest.raises(ValueError, match=message):
    plot_curves(curves, tmp_path / "x.png", METRICS, title="t", **kwargs)
  assert not (tmp_path / "x.png").exists()
