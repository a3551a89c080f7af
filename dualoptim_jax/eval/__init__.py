"""Evaluation of unlearned classifiers: metrics, aggregation over seeds, plots."""

from dualoptim_jax.eval.aggregate import (
    RETRAIN_REFS,
    Summary,
    group_runs,
    load_runs,
    markdown_table,
    reference,
    save_run_json,
    summarize,
    write_csv,
)
from dualoptim_jax.eval.metrics import (
    METRICS,
    accuracy,
    entropy,
    mia_efficacy,
    predict_logits,
    softmax,
    unlearning_metrics,
)
from dualoptim_jax.eval.plots import plot_metrics_over_epochs

__all__ = [
    "METRICS",
    "RETRAIN_REFS",
    "Summary",
    "accuracy",
    "entropy",
    "group_runs",
    "load_runs",
    "markdown_table",
    "mia_efficacy",
    "plot_metrics_over_epochs",
    "predict_logits",
    "reference",
    "save_run_json",
    "softmax",
    "summarize",
    "unlearning_metrics",
    "write_csv",
]
