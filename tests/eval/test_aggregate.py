"""Tests for seed aggregation, tables and run files."""

import csv
import json

import numpy as np
import pytest

from dualoptim_jax.eval import (
  Metric,
  group_runs,
  load_runs,
  markdown_table,
  reference,
  save_run_json,
  summarize,
  write_csv,
)

METRICS = (Metric("UA"), Metric("RA"), Metric("TA"), Metric("MIA"))
# The official code's CIFAR-10 retrain reference with SGD (`parse_result.py`).
CIFAR10_RT = {"UA": 5.39, "RA": 100.0, "TA": 94.248, "MIA": 76.264}


def _run(method, optimizer, seed, ua, ra, ta, mia):
  return dict(method=method, optimizer=optimizer, seed=seed, UA=ua, RA=ra, TA=ta, MIA=mia)


RUNS = [
  _run("SalUn", "dual", 1, 4.0, 100.0, 94.0, 70.0),
  _run("SalUn", "dual", 2, 6.0, 98.0, 92.0, 80.0),
]
RT_RUNS = [
  _run("RT", "sgd", 1, 5.0, 100.0, 94.0, 76.0),
  _run("RT", "sgd", 2, 6.0, 100.0, 95.0, 78.0),
]


def test_summarize_fixed_reference():
  # mean = [5, 99, 93, 75]; population std = [1, 1, 1, 5] (ddof=1 would give sqrt(2) x).
  # ref = [5.39, 100, 94.248, 76.264] -> gaps [0.39, 1, 1.248, 1.264].
  # Avg Gap = 3.902 / 4 = 0.9755; Avg Std = 8 / 4 = 2.
  # (The mean of per-seed gaps would be (1.9755 + 2.1485) / 2 = 2.062 instead.)
  s = summarize(RUNS, CIFAR10_RT, METRICS)
  assert s.num_seeds == 2
  assert s.mean == pytest.approx({"UA": 5.0, "RA": 99.0, "TA": 93.0, "MIA": 75.0})
  assert s.std == pytest.approx({"UA": 1.0, "RA": 1.0, "TA": 1.0, "MIA": 5.0})
  assert s.gap == pytest.approx({"UA": 0.39, "RA": 1.0, "TA": 1.248, "MIA": 1.264})
  assert s.avg_gap == pytest.approx(0.9755)
  assert s.avg_std == pytest.approx(2.0)


def test_summarize_against_rt_runs():
  # RT seed means = [5.5, 100, 94.5, 77] -> gaps [0.5, 1, 1.5, 2], Avg Gap = 1.25.
  assert reference(RT_RUNS, METRICS) == pytest.approx(
    {"UA": 5.5, "RA": 100.0, "TA": 94.5, "MIA": 77.0}
  )
  s = summarize(RUNS, RT_RUNS, METRICS)
  assert s.gap == pytest.approx({"UA": 0.5, "RA": 1.0, "TA": 1.5, "MIA": 2.0})
  assert s.avg_gap == pytest.approx(1.25)
  rt = summarize(RT_RUNS, RT_RUNS, METRICS)
  assert rt.avg_gap == 0.0
  # RT std = [0.5, 0, 0.5, 1] -> Avg Std = 0.5.
  assert rt.avg_std == pytest.approx(0.5)


def test_summarize_bad_input():
  with pytest.raises(ValueError, match="at least one"):
    summarize([], RT_RUNS, METRICS)
  with pytest.raises(ValueError, match="MIA"):
    summarize([{"UA": 1.0, "RA": 1.0, "TA": 1.0}], RT_RUNS, METRICS)
  with pytest.raises(ValueError, match="TA"):
    summarize(RUNS, {"UA": 1.0, "RA": 1.0, "MIA": 1.0}, METRICS)
  with pytest.raises(ValueError, match="at least one metric"):
    summarize(RUNS, RT_RUNS, ())


def test_group_runs():
  groups = group_runs(RT_RUNS + RUNS)
  assert list(groups) == [("RT", "sgd"), ("SalUn", "dual")]
  assert groups[("SalUn", "dual")] == RUNS
  with pytest.raises(ValueError, match="lacks keys"):
    group_runs([{"method": "RT"}])


def test_markdown_table():
  table = markdown_table(
    {
      "RT": summarize(RT_RUNS, RT_RUNS, METRICS),
      "SalUn + DualOptim": summarize(RUNS, RT_RUNS, METRICS),
    },
    METRICS,
  )
  assert table.splitlines() == [
    "| Method | UA | RA | TA | MIA | Avg. Gap | Avg. Std |",
    "|---|---:|---:|---:|---:|---:|---:|",
    "| RT | 5.50 ± 0.50 (0.00) | 100.00 ± 0.00 (0.00) | 94.50 ± 0.50 (0.00) "
    "| 77.00 ± 1.00 (0.00) | 0.00 | 0.50 |",
    "| SalUn + DualOptim | 5.00 ± 1.00 (0.50) | 99.00 ± 1.00 (1.00) | 93.00 ± 1.00 (1.50) "
    "| 75.00 ± 5.00 (2.00) | 1.25 | 2.00 |",
  ]


def test_one_seed_has_no_std():
  """A row of one seed prints no ± std, and n/a for Avg. Std."""
  one = summarize(RUNS[:1], RT_RUNS, METRICS)
  table = markdown_table({"SalUn (dual)": one}, METRICS)
  assert table.splitlines()[-1] == (
    "| SalUn (dual) | 4.00 (1.50) | 100.00 (0.00) | 94.00 (0.50) | 70.00 (7.00) | 2.25 | n/a |"
  )


def test_metric_direction_labels_the_columns():
  metrics = (Metric("MU", "higher"), Metric("PPL", "lower"), Metric("UA"))
  runs = [{"MU": 0.5, "PPL": 10.0, "UA": 3.0}]
  header = markdown_table({"x": summarize(runs, runs, metrics)}, metrics).splitlines()[0]
  assert header == "| Method | MU ↑ | PPL ↓ | UA | Avg. Gap | Avg. Std |"
  with pytest.raises(ValueError, match="Metric.better must be one of"):
    Metric("MU", "up")


def test_write_csv(tmp_path):
  path = tmp_path / "out" / "table.csv"
  write_csv({("SalUn", "dual"): summarize(RUNS, RT_RUNS, METRICS)}, path, METRICS)
  with path.open() as fp:
    (row,) = list(csv.DictReader(fp))
  assert row["method"] == "SalUn" and row["optimizer"] == "dual" and row["num_seeds"] == "2"
  assert float(row["MIA_mean"]) == 75.0 and float(row["MIA_std"]) == 5.0
  assert float(row["TA_gap"]) == 1.5
  assert float(row["avg_gap"]) == 1.25 and float(row["avg_std"]) == 2.0


def test_save_and_load_runs(tmp_path):
  save_run_json(tmp_path / "a" / "seed2.json", RUNS[1])
  run = dict(RUNS[0], UA=np.float32(4.0), curve=np.arange(3))
  save_run_json(tmp_path / "a" / "seed1.json", run)
  loaded = load_runs(tmp_path)
  assert loaded == [dict(RUNS[0], curve=[0, 1, 2]), RUNS[1]]
  assert not list(tmp_path.rglob("*.tmp"))


def test_failed_save_keeps_previous_file(tmp_path):
  path = tmp_path / "run.json"
  save_run_json(path, RUNS[0])
  with pytest.raises(TypeError, match="object is not JSON serializable"):
    save_run_json(path, {"UA": object()})
  assert json.loads(path.read_text()) == RUNS[0]
  assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_load_runs_missing_directory(tmp_path):
  with pytest.raises(ValueError, match="not a directory"):
    load_runs(tmp_path / "missing")


def test_write_csv_leaves_one_seed_stds_empty(tmp_path):
  path = tmp_path / "table.csv"
  write_csv({("RL", "sgd"): summarize(RUNS[:1], RT_RUNS, METRICS)}, path, METRICS)
  with path.open() as fp:
    (row,) = list(csv.DictReader(fp))
  assert row["UA_std"] == "" and row["avg_std"] == "" and float(row["UA_gap"]) == 1.5
