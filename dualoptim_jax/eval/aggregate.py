r"""Aggregation of per-seed metrics into paper-style tables, for any task's metrics.

For metrics :math:`m` and seeds :math:`s = 1..S`:

* :math:`\mu_m = \frac1S \sum_s x_{s,m}` and :math:`\sigma_m = \sqrt{\frac1S \sum_s
  (x_{s,m} - \mu_m)^2}` (population std, ``ddof=0``);
* :math:`\mathrm{gap}_m = |\mu_m - \mathrm{ref}_m|` against a reference (the retrained model);
* Avg. Gap = mean over the metrics of :math:`\mathrm{gap}_m` (the gap of the seed means, not the
  mean of per-seed gaps), Avg. Std = mean of :math:`\sigma_m`.

A run is a flat JSON object holding at least the metrics, e.g. ``{"method": "SalUn",
"optimizer": "dual", "seed": 1, "UA": ..., "RA": ..., "TA": ..., "MIA": ...}``.
"""

import csv
import dataclasses
import io
import json
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

from dualoptim_jax.core.distributed import main_process_writes

_ARROWS = {"higher": " ↑", "lower": " ↓", "closer": ""}


@dataclasses.dataclass(frozen=True)
class Metric:
  """A metric column: its name and which values are better.

  Attributes:
    name: the key of the metric in a run.
    better: ``"higher"``, ``"lower"``, or ``"closer"`` (to the reference model, as every
      unlearning metric judged by its gap to the retrained model).
  """

  name: str
  better: str = "closer"

  def __post_init__(self):
    if self.better not in _ARROWS:
      raise ValueError(f"Metric.better must be one of {sorted(_ARROWS)}, got {self.better!r}.")

  @property
  def label(self) -> str:
    """The name with an arrow for the better direction (``"TA ↑"``); none for ``"closer"``."""
    return self.name + _ARROWS[self.better]


def _names(metrics: Sequence[Metric]) -> list[str]:
  if not metrics:
    raise ValueError("Need at least one metric.")
  return [m.name for m in metrics]


@dataclasses.dataclass(frozen=True)
class Summary:
  """Seed statistics of one row against a reference, keyed by metric name."""

  mean: dict[str, float]
  std: dict[str, float]
  gap: dict[str, float]
  num_seeds: int

  @property
  def avg_gap(self) -> float:
    return float(np.mean(list(self.gap.values())))

  @property
  def avg_std(self) -> float:
    return float(np.mean(list(self.std.values())))


def _metric_matrix(runs: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
  """``(seeds, metrics)`` array of the runs' metrics."""
  if not runs:
    raise ValueError("Need at least one run.")
  for run in runs:
    missing = [m for m in names if m not in run]
    if missing:
      raise ValueError(f"Run {run!r} lacks metrics {missing}.")
  return np.array([[float(run[m]) for m in names] for run in runs])


def reference(
  ref: Mapping[str, float] | Sequence[Mapping[str, float]], metrics: Sequence[Metric]
) -> dict[str, float]:
  """The reference: ``ref`` itself, or the seed means of a list of reference runs."""
  names = _names(metrics)
  runs = [ref] if isinstance(ref, Mapping) else ref
  return dict(zip(names, _metric_matrix(runs, names).mean(axis=0).tolist(), strict=True))


def summarize(
  runs: Sequence[Mapping[str, float]],
  ref: Mapping[str, float] | Sequence[Mapping[str, float]],
  metrics: Sequence[Metric],
) -> Summary:
  """Mean, population std and gap to ``reference(ref)`` over the seeds in ``runs``."""
  names = _names(metrics)
  x = _metric_matrix(runs, names)
  ref = reference(ref, metrics)
  mean, std = x.mean(axis=0).tolist(), x.std(axis=0).tolist()
  return Summary(
    mean=dict(zip(names, mean, strict=True)),
    std=dict(zip(names, std, strict=True)),
    gap={m: abs(mu - ref[m]) for m, mu in zip(names, mean, strict=True)},
    num_seeds=len(runs),
  )


def group_runs(
  runs: Sequence[Mapping], keys: Sequence[str] = ("method", "optimizer")
) -> dict[tuple, list[Mapping]]:
  """Runs grouped by the values of ``keys``, in order of first appearance."""
  groups = {}
  for run in runs:
    missing = [k for k in keys if k not in run]
    if missing:
      raise ValueError(f"Run {run!r} lacks keys {missing}.")
    groups.setdefault(tuple(run[k] for k in keys), []).append(run)
  return groups


def markdown_table(
  rows: Mapping[str, Summary], metrics: Sequence[Metric], *, digits: int = 2
) -> str:
  """Paper-style Markdown table, one row per label, in the order given.

  A metric cell reads ``mean ± std (gap)``, the gap being to the reference the summary was
  computed against; a row of one seed has no std (``mean (gap)``, Avg. Std ``n/a``). The last two
  columns are Avg. Gap and Avg. Std.
  """
  if not rows:
    raise ValueError("Need at least one row.")
  names = _names(metrics)
  f = f"{{:.{digits}f}}".format
  lines = [
    "| Method | " + " | ".join(m.label for m in metrics) + " | Avg. Gap | Avg. Std |",
    "|---|" + "---:|" * (len(names) + 2),
  ]
  for label, s in rows.items():
    one = s.num_seeds == 1
    cells = [f"{f(s.mean[m])}{'' if one else ' ± ' + f(s.std[m])} ({f(s.gap[m])})" for m in names]
    cells += [f(s.avg_gap), "n/a" if one else f(s.avg_std)]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


@main_process_writes
def write_csv(
  rows: Mapping[tuple, Summary],
  path,
  metrics: Sequence[Metric],
  key_names: Sequence[str] = ("method", "optimizer"),
) -> None:
  """Writes one CSV row per key tuple with every statistic.

  Columns: ``key_names``, ``num_seeds``, then ``{m}_mean, {m}_std, {m}_gap`` for each metric, then
  ``avg_gap, avg_std``. Stds of a one-seed row are left empty.
  """
  names = _names(metrics)
  header = [*key_names, "num_seeds"]
  header += [f"{m}_{k}" for m in names for k in ("mean", "std", "gap")]
  header += ["avg_gap", "avg_std"]
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", newline="") as fp:
    writer = csv.writer(fp)
    writer.writerow(header)
    for key, s in rows.items():
      one = s.num_seeds == 1
      stats = [v for m in names for v in (s.mean[m], "" if one else s.std[m], s.gap[m])]
      writer.writerow([*key, s.num_seeds, *stats, s.avg_gap, "" if one else s.avg_std])


def _to_json(x):
  """JSON fallback for NumPy and JAX scalars and arrays."""
  if hasattr(x, "tolist"):
    return x.tolist()
  raise TypeError(f"Object of type {type(x).__name__} is not JSON serializable.")


def _write_atomic(path, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically (temporary file, then rename), creating its folder."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as fp:
      fp.write(data)
      fp.flush()
      os.fsync(fp.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


@main_process_writes
def write_text(path, text: str) -> None:
  """Writes ``text`` to ``path`` atomically (temporary file, then rename), creating its folder.

  A reader sees either the previous file or the complete new one, never a partial write. With
  several processes, process 0 writes (`core.distributed`).
  """
  _write_atomic(path, text.encode())


@main_process_writes
def save_arrays(path, arrays: Mapping[str, np.ndarray]) -> None:
  """Writes ``arrays`` to ``path`` as a compressed ``.npz``, atomically, by process 0."""
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  _write_atomic(path, buffer.getvalue())


def save_run_json(path, run: Mapping) -> None:
  """Writes ``run`` to ``path`` as JSON with `write_text`: atomically, by process 0."""
  write_text(path, json.dumps(run, indent=2, default=_to_json))


def load_run_json(path) -> dict:
  """The run saved in ``path``; a damaged file raises a ``ValueError`` that names it."""
  path = pathlib.Path(path)
  try:
    run = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise ValueError(
      f"{path} is not valid JSON ({error}); move it away to run that run again."
    ) from None
  if not isinstance(run, dict):
    raise ValueError(f"{path} holds {type(run).__name__}, not a JSON object.")
  return run


def load_runs(directory) -> list[dict]:
  """All ``*.json`` runs below ``directory`` (recursively), sorted by path."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise ValueError(f"{directory} is not a directory.")
  return [load_run_json(p) for p in sorted(directory.rglob("*.json"))]
