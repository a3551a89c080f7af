"""Metric curves over a run, with seed bands, for any task's metrics; ROC curves on log axes."""

import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dualoptim_jax.core.distributed import main_process_writes
from dualoptim_jax.eval.aggregate import Metric


def plot_curves(
  curves: Mapping[str, np.ndarray],
  path,
  metrics: Sequence[Metric],
  *,
  title: str,
  epochs: Sequence[float] | None = None,
  ref: Mapping[str, float] | None = None,
  ref_label: str = "RT",
  xlabel: str = "epoch",
) -> Figure:
  """Saves a PNG with one panel per metric and returns its figure.

  Each curve is drawn as its mean over seeds with a band of plus or minus one population standard
  deviation (``ddof=0``, as in the tables).

  Args:
    curves: label (e.g. ``"SFRon (dual)"``) -> array ``(seeds, points, len(metrics))``.
    path: the PNG file.
    metrics: the metrics, in the order of the curves' last axis.
    title: the figure's title, e.g. the config and its seeds.
    epochs: the x value of each point; default ``0, 1, ..., points - 1`` (point 0 being the model
      before the run).
    ref: a reference model's metric values, drawn as dashed horizontal lines.
    ref_label: the legend label of the reference.
    xlabel: the x axis label.
  """
  if not curves:
    raise ValueError("Need at least one curve.")
  names = [m.name for m in metrics]
  curves = {label: np.asarray(c, np.float64) for label, c in curves.items()}
  for label, c in curves.items():
    if c.ndim != 3 or c.shape[-1] != len(names) or 0 in c.shape:
      raise ValueError(
        f"Curve {label!r} must have shape (seeds, points, {len(names)}), got {c.shape}."
      )
    if epochs is not None and len(epochs) != c.shape[1]:
      raise ValueError(
        f"Curve {label!r} has {c.shape[1]} points but {len(epochs)} x values were given."
      )
  if ref is not None and any(m not in ref for m in names):
    raise ValueError(f"ref must hold {names}, got {sorted(ref)}.")

  fig = Figure(figsize=(4 * len(names), 3.4), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, len(names), squeeze=False)[0]
  for label, c in curves.items():
    x = np.arange(c.shape[1]) if epochs is None else np.asarray(epochs)
    mean, std = c.mean(axis=0), c.std(axis=0)
    for i, ax in enumerate(axes):
      (line,) = ax.plot(x, mean[:, i], label=label)
      ax.fill_between(
        x,
        mean[:, i] - std[:, i],
        mean[:, i] + std[:, i],
        color=line.get_color(),
        alpha=0.2,
        linewidth=0,
      )
  for ax, metric in zip(axes, metrics, strict=True):
    if ref is not None:
      ax.axhline(ref[metric.name], color="black", linestyle="--", linewidth=1, label=ref_label)
    ax.set_title(metric.label)
    ax.set_xlabel(xlabel)
  axes[0].legend(fontsize="small")
  fig.suptitle(title)
  _save_png(fig, pathlib.Path(path))
  return fig


def plot_roc(
  rocs: Mapping[str, np.ndarray],
  fprs: Sequence[float],
  path,
  *,
  title: str,
  reference: str | None = None,
) -> Figure:
  """Saves a log-log ROC plot (TPR against FPR, the chance line dotted) and returns its figure.

  Args:
    rocs: label -> array ``(runs, len(fprs))`` of TPRs; the mean over runs is drawn.
    fprs: the FPR of each column.
    path: the PNG file.
    title: the figure's title.
    reference: the label drawn dashed in black (e.g. the retrained model).
  """
  if not rocs:
    raise ValueError("Need at least one ROC.")
  fig = Figure(figsize=(5.5, 5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  fprs = np.asarray(fprs)
  for label, tpr in rocs.items():
    style = {"color": "black", "linestyle": "--"} if label == reference else {}
    ax.plot(fprs, np.clip(np.mean(tpr, axis=0), fprs[0] / 10, 1), label=label, **style)
  ax.plot(fprs, fprs, color="gray", linestyle=":", linewidth=1)
  ax.set(xscale="log", yscale="log", xlabel="FPR", ylabel="TPR", title=title)
  ax.set_ylim(fprs[0] / 10, 1.05)
  ax.legend(fontsize="small")
  _save_png(fig, pathlib.Path(path))
  return fig


@main_process_writes
def _save_png(fig: Figure, path: pathlib.Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, format="png", dpi=100)
