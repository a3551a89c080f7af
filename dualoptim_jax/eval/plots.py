"""Metric curves over unlearning epochs."""

from collections.abc import Mapping
import pathlib

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from dualoptim_jax.eval.metrics import METRICS


def plot_metrics_over_epochs(
    curves: Mapping[str, np.ndarray],
    path,
    *,
    epochs=None,
    ref: Mapping[str, float] | None = None,
) -> None:
  """Saves a PNG with one panel per metric in ``[UA, RA, TA, MIA]``.

  Each curve is drawn as its mean over seeds with a shaded band of plus or
  minus one population standard deviation (``ddof=0``, as in the tables).

  Args:
    curves: label (e.g. ``"SFRon (dual)"``) to an array of shape
      ``(seeds, epochs, 4)`` holding ``[UA, RA, TA, MIA]`` in percent.
    path: output PNG file.
    epochs: x values, one per epoch; defaults to ``1, 2, ..., epochs``.
    ref: optional retrain reference, drawn as dashed horizontal lines.
  """
  if not curves:
    raise ValueError("Need at least one curve.")
  curves = {label: np.asarray(c, np.float64) for label, c in curves.items()}
  for label, c in curves.items():
    if c.ndim != 3 or c.shape[-1] != len(METRICS) or 0 in c.shape:
      raise ValueError(
          f"Curve {label!r} must have shape (seeds, epochs, {len(METRICS)}), "
          f"got {c.shape}."
      )
    if epochs is not None and len(epochs) != c.shape[1]:
      raise ValueError(
          f"Curve {label!r} has {c.shape[1]} epochs but {len(epochs)} x values "
          "were given."
      )

  if ref is not None and any(m not in ref for m in METRICS):
    raise ValueError(f"ref must hold {METRICS}, got {sorted(ref)}.")

  fig = Figure(figsize=(4 * len(METRICS), 3.2), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, len(METRICS))
  for label, c in curves.items():
    x = np.arange(1, c.shape[1] + 1) if epochs is None else np.asarray(epochs)
    mean, std = c.mean(axis=0), c.std(axis=0)
    for i, ax in enumerate(axes):
      (line,) = ax.plot(x, mean[:, i], label=label)
      ax.fill_between(
          x, mean[:, i] - std[:, i], mean[:, i] + std[:, i],
          color=line.get_color(), alpha=0.2, linewidth=0,
      )
  for ax, m in zip(axes, METRICS):
    if ref is not None:
      ax.axhline(ref[m], color="black", linestyle="--", linewidth=1, label="RT")
    ax.set_title(m)
    ax.set_xlabel("epoch")
    ax.set_ylabel("%")
  axes[0].legend(fontsize="small")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, format="png", dpi=100)
