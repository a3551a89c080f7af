"""The TOFU unlearning table end to end on a tiny model: the grid, the choice, repeats, files,
restarts and refusals."""

import dataclasses
import json
import math
import shutil
import types

import pytest

from dualoptim_jax.tasks.llm import experiment
from dualoptim_jax.tasks.llm.unlearn import UnlearnConfig
from tests.tasks.llm.test_llm_run import TINY, pytestmark  # noqa: F401

CONFIG = dataclasses.replace(
  TINY,
  finetune=dataclasses.replace(TINY.finetune, max_epochs=None),  # one epoch, no gate retries
  eval=dataclasses.replace(TINY.eval, batch_size=8),
  unlearn=UnlearnConfig(lr=1e-3, batch_size=40, epochs=2, buckets=(96, 128)),
  methods=("NPO+GD",),
  optimizers=("dual",),
  forget_lr_ratios={"dual": (1.0, 3.0)},
  tasks=(1, 2),
  curve_size=4,
  widen=0,  # a grid of two always has its winner at an edge
)


def test_the_table_grids_on_the_first_task_and_repeats_the_winner(tmp_path, monkeypatch):
  table = experiment.run_unlearning(CONFIG, tmp_path, progress=False)
  runs_dir = tmp_path / "unlearn" / "runs"
  runs = {p.stem: json.loads(p.read_text()) for p in runs_dir.glob("*.json")}
  for optimizer in CONFIG.optimizers:
    grid = [runs[f"NPO+GD-{optimizer}-r{r:g}-task1"] for r in (1.0, 3.0)]
    best = max(grid, key=lambda r: r["Avg"])["forget_lr_ratio"]
    assert [n for n in runs if n.startswith(f"NPO+GD-{optimizer}-") and n.endswith("task2")] == [
      f"NPO+GD-{optimizer}-r{best:g}-task2"
    ]
  run = runs["NPO+GD-dual-r3-task1"]
  # forget 80 QA at batch 40: 2 forget batches, 12 steps an epoch, 2 epochs.
  assert run["steps"] == 24 and [p["step"] for p in run["curve"]] == [0, 12, 24]
  assert run["curve"][0] == runs["NPO+GD-dual-r1-task1"]["curve"][0]  # the target model
  assert run["Avg"] == pytest.approx((run["MU"] + run["UFE"]) / 2)
  assert set(run["seconds"]) == {"unlearning", "curve_evaluation", "evaluation"}
  assert not (tmp_path / "unlearn" / "unfinished").exists() or not any(
    (tmp_path / "unlearn" / "unfinished").iterdir()
  )
  assert "| NPO+GD | dual |" in table and "| target model |" in table
  assert "| NPO+GD | dual edge | 1: " in table  # the grid row; a winner of two is at an edge
  assert (tmp_path / "unlearn" / "curves_NPO+GD.png").is_file()
  saved = json.loads((tmp_path / "unlearn" / "table.json").read_text())
  assert [r["tasks"] for r in saved["rows"]] == [[1, 2]]

  def fail(*args, **kwargs):
    raise AssertionError("a finished run ran again")

  monkeypatch.setattr(experiment, "unlearn_lm", fail)
  # The references (retain model, evaluations) are kept apart: without the retain models'
  # checkpoints nothing retrains.
  references = tmp_path / "unlearn" / "references"
  assert sorted(p.name for p in references.iterdir()) == [
    "forget10_task1.json",
    "forget10_task2.json",
  ]
  for retain in (tmp_path / "checkpoints").glob("retain_*"):
    shutil.rmtree(retain)
  monkeypatch.setattr(experiment, "build_models", fail)
  assert experiment.run_unlearning(CONFIG, tmp_path, progress=False) == table
  other = dataclasses.replace(CONFIG, unlearn=dataclasses.replace(CONFIG.unlearn, lr=2e-3))
  with pytest.raises(ValueError, match="other hyper-parameters"):
    experiment.run_unlearning(other, tmp_path, progress=False)


@pytest.fixture
def peaked_runs(monkeypatch):
  """Replaces the models and the runs: a run's Avg peaks at ``peaked_runs.peak`` (log scale)."""
  scores = {"MU": 0.5, "UFE": 0.5, "FQ": 0.5, "Avg": 0.5}
  report = {"results": {role: {"scores": scores} for role in experiment.ROLES}}
  examples = types.SimpleNamespace(examples=[None] * 40)
  task = types.SimpleNamespace(fingerprint="t", report=report, forget=examples, retain=examples)
  monkeypatch.setattr(experiment, "_Task", lambda *args: task)
  point = {m.name: 0.5 for m in experiment.CURVE_METRICS}
  state = types.SimpleNamespace(peak=1.0)

  def fake_run(config, task, method, optimizer, ratio, path):
    avg = -abs(math.log(ratio / state.peak))
    experiment.E.save_run_json(
      path,
      {
        "config": config.name,
        "method": method,
        "optimizer": optimizer,
        "forget_lr_ratio": ratio,
        "task": config.task,
        "target": "t",
        **scores,
        "Avg": avg,
        "curve": [point, point],
        "hyperparameters": experiment._expected(config, task, method, optimizer, ratio),
        "seconds": {"unlearning": 1.0},
      },
    )

  monkeypatch.setattr(experiment, "run_one", fake_run)
  return state


def _ran(tmp_path, task):
  return sorted(p.stem for p in (tmp_path / "unlearn" / "runs").glob(f"*task{task}.json"))


@pytest.mark.parametrize(
  ("peak", "grid", "ran"),
  [
    (0.5, (1.0, 3.0, 10.0), [0.1, 0.3, 1, 3, 10]),  # 0.3 beats 1, 0.1 does not: 0.3 is inside
    (500.0, (1.0, 3.0, 10.0), [1, 3, 10, 30, 100]),  # two steps up, 100 still best: an edge
    (4.0, (1.0, 3.0, 10.0), [1, 3, 10]),  # inside from the start: no widening
  ],
)
def test_a_grid_widens_while_its_best_sits_at_an_edge(tmp_path, peaked_runs, peak, grid, ran):
  """``widen=2`` allows two steps per edge."""
  peaked_runs.peak = peak
  config = dataclasses.replace(CONFIG, forget_lr_ratios={"dual": grid}, widen=2)
  table = experiment.run_unlearning(config, tmp_path, progress=False)
  assert _ran(tmp_path, 1) == sorted(f"NPO+GD-dual-r{r:g}-task1" for r in ran)
  best = min(ran, key=lambda r: abs(math.log(r / peak)))
  assert _ran(tmp_path, 2) == [f"NPO+GD-dual-r{best:g}-task2"]
  assert ("dual edge |" in table) == (best in (min(ran), max(ran)))
  assert all(f"; {r:g}: " in table or f"| {r:g}: " in table for r in ran)  # the grid row


def test_an_optimizer_can_take_anothers_chosen_ratio(tmp_path, peaked_runs):
  peaked_runs.peak = 3.0
  config = dataclasses.replace(
    CONFIG,
    optimizers=("plus", "plus8"),
    forget_lr_ratios={"plus": (1.0, 3.0, 10.0), "plus8": "plus"},
  )
  table = experiment.run_unlearning(config, tmp_path, progress=False)
  for task in (1, 2):
    assert [n for n in _ran(tmp_path, task) if "plus8" in n] == [f"NPO+GD-plus8-r3-task{task}"]
  assert len(_ran(tmp_path, 1)) == 4  # plus: 1, 3, 10; plus8: 3 only
  assert "| NPO+GD | plus8 (plus's ratio, not gridded) | 3: " in table


@pytest.mark.parametrize(
  ("optimizers", "ratios"),
  [
    (("plus8", "plus"), {"plus": (1.0,), "plus8": "plus"}),  # listed after plus8
    (("dual", "plus8"), {"dual": (1.0,), "plus": "dual", "plus8": "plus"}),  # plus has no grid
  ],
  ids=["listed after", "no grid of its own"],
)
def test_a_taken_ratio_must_come_from_a_gridded_optimizer_before_it(optimizers, ratios):
  with pytest.raises(ValueError, match="plus8 takes the forget lr ratio chosen for 'plus'"):
    dataclasses.replace(CONFIG, optimizers=optimizers, forget_lr_ratios=ratios)
