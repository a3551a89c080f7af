"""Task-agnostic evaluation: aggregation over seeds, tables, run files and plots. Every function
takes the metrics (names and better direction) as arguments."""

from dualoptim_jax.eval import mia
from dualoptim_jax.eval.aggregate import (
  Metric,
  Summary,
  group_runs,
  load_run_json,
  load_runs,
  markdown_table,
  reference,
  save_arrays,
  save_run_json,
  summarize,
  write_csv,
  write_text,
)
from dualoptim_jax.eval.plots import plot_curves, plot_roc

__all__ = [
  "Metric",
  "Summary",
  "group_runs",
  "load_run_json",
  "load_runs",
  "markdown_table",
  "mia",
  "plot_curves",
  "plot_roc",
  "reference",
  "save_arrays",
  "save_run_json",
  "summarize",
  "write_csv",
  "write_text",
]
