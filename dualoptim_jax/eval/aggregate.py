"""Aggregation of per-seed unlearning metrics into paper-style tables.

For metrics ``m`` in ``[UA, RA, TA, MIA]`` and seeds ``s = 1..S``:

* ``mean_m = (1/S) sum_s x_{s,m}`` and ``std_m = sqrt((1/S) sum_s (x_{s,m} - mean_m)^2)``
  (population std, ``ddof=0``);
* ``gap_m = |mean_m - ref_m|`` against the retrain (RT) reference;
* ``Avg. Gap = mean_m gap_m`` (the gap of the seed means, not the mean of
  per-seed gaps) and ``Avg. Std = mean_m std_m``.

A run is a flat JSON object holding at least the four metrics, e.g.
``{"method": "SalUn", "optimizer": "dual", "seed": 1, "UA": ..., "RA": ...,
"TA": ..., "MIA": ...}``.
"""

from collections.abc import Mapping, Sequence
import csv
import dataclasses
import json
import os
import pathlib
import tempfile

import numpy as np

from dualoptim_jax.eval.metrics import METRICS

# Retrain references [UA, RA, TA, MIA] of the official code (`parse_result.py`).
RETRAIN_REFS = {
    "cifar10_sgd": {"UA": 5.39, "RA": 100.0, "TA": 94.248, "MIA": 76.264},
    "cifar10_adam": {"UA": 6.556, "RA": 100.0, "TA": 92.838, "MIA": 78.362},
    "tinyimagenet": {"UA": 14.71, "RA": 99.55, "TA": 85.49, "MIA": 69.3},
}


@dataclasses.dataclass(frozen=True)
class Summary:
  """Seed statistics of one (method, optimizer) against a retrain reference."""

  mean: dict[str, float]
  std: dict[str, float]
  gap: dict[str, float]
  num_seeds: int

  @property
  def avg_gap(self) -> float:
    return float(np.mean([self.gap[m] for m in METRICS]))

  @property
  def avg_std(self) -> float:
    return float(np.mean([self.std[m] for m in METRICS]))


def _metric_matrix(runs: Sequence[Mapping[str, float]]) -> np.ndarray:
  """``(seeds, 4)`` array of the runs' metrics in ``METRICS`` order."""
  if not runs:
    raise ValueError("Need at least one run.")
  for run in runs:
    missing = [m for m in METRICS if m not in run]
    if missing:
      raise ValueError(f"Run {run!r} lacks metrics {missing}.")
  return np.array([[float(run[m]) for m in METRICS] for run in runs])


def reference(
    ref: Mapping[str, float] | Sequence[Mapping[str, float]],
) -> dict[str, float]:
  """The RT reference: ``ref`` itself, or the seed means of a list of RT runs."""
  runs = [ref] if isinstance(ref, Mapping) else ref
  return dict(zip(METRICS, _metric_matrix(runs).mean(axis=0).tolist()))


def summarize(
    runs: Sequence[Mapping[str, float]],
    ref: Mapping[str, float] | Sequence[Mapping[str, float]],
) -> Summary:
  """Mean, population std and gap to ``reference(ref)`` over the seeds in ``runs``."""
  x = _metric_matrix(runs)
  ref = reference(ref)
  mean, std = x.mean(axis=0), x.std(axis=0)
  return Summary(
      mean=dict(zip(METRICS, mean.tolist())),
      std=dict(zip(METRICS, std.tolist())),
      gap={m: abs(mu - ref[m]) for m, mu in zip(METRICS, mean.tolist())},
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


def markdown_table(rows: Mapping[str, Summary], *, digits: int = 2) -> str:
  """Paper-style Markdown table, one row per label, in the order given.

  Each metric cell reads ``mean ± std (gap)``, the gap being to the RT
  reference the summary was computed against; the last two columns are
  ``Avg. Gap`` and ``Avg. Std``.
  """
  if not rows:
    raise ValueError("Need at least one row.")
  f = f"{{:.{digits}f}}".format
  lines = [
      "| Method | " + " | ".join(METRICS) + " | Avg. Gap | Avg. Std |",
      "|---|" + "---:|" * (len(METRICS) + 2),
  ]
  for label, s in rows.items():
    cells = [f"{f(s.mean[m])} ± {f(s.std[m])} ({f(s.gap[m])})" for m in METRICS]
    cells += [f(s.avg_gap), f(s.avg_std)]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_csv(rows: Mapping[tuple[str, str], Summary], path) -> None:
  """Writes one CSV row per ``(method, optimizer)`` with every statistic.

  Columns: ``method, optimizer, num_seeds``, then ``{m}_mean, {m}_std,
  {m}_gap`` for each metric ``m``, then ``avg_gap, avg_std``.
  """
  header = ["method", "optimizer", "num_seeds"]
  header += [f"{m}_{k}" for m in METRICS for k in ("mean", "std", "gap")]
  header += ["avg_gap", "avg_std"]
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", newline="") as fp:
    writer = csv.writer(fp)
    writer.writerow(header)
    for (method, optimizer), s in rows.items():
      stats = [v for m in METRICS for v in (s.mean[m], s.std[m], s.gap[m])]
      writer.writerow(
          [method, optimizer, s.num_seeds, *stats, s.avg_gap, s.avg_std]
      )


def _to_json(x):
  """JSON fallback for NumPy and JAX scalars and arrays."""
  if hasattr(x, "tolist"):
    return x.tolist()
  raise TypeError(f"Object of type {type(x).__name__} is not JSON serializable.")


def save_run_json(path, run: Mapping) -> None:
  """Writes ``run`` to ``path`` atomically (temporary file, then rename).

  A reader sees either the previous file or the complete new one, never a
  partial write.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as fp:
      json.dump(run, fp, indent=2, default=_to_json)
      fp.flush()
      os.fsync(fp.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def load_runs(directory) -> list[dict]:
  """All ``*.json`` runs below ``directory`` (recursively), sorted by path."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise ValueError(f"{directory} is not a directory.")
  return [json.loads(p.read_text()) for p in sorted(directory.rglob("*.json"))]
