"""The table runner end to end on a tiny synthetic setting: outputs, resuming, and its table."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from dualoptim_jax import eval as E
from dualoptim_jax.core import checkpoint
from dualoptim_jax.data import ArrayDataset, Setting
from dualoptim_jax.data import settings as data_settings
from dualoptim_jax.tasks.classification import (
  METRICS,
  RL,
  ExperimentConfig,
  SFRon,
  UnlearnConfig,
  run_table,
  write_table,
)
from dualoptim_jax.tasks.classification import run as runner
from dualoptim_jax.tasks.classification.run import run_sweep


def synthetic_setting(root):
  del root
  rng = np.random.default_rng(0)
  prototypes = rng.integers(0, 256, (4, 8, 8, 3))

  def sample(n):
    labels = rng.integers(0, 4, n).astype(np.int32)
    images = np.clip(prototypes[labels] + rng.normal(0, 30, (n, 8, 8, 3)), 0, 255)
    return ArrayDataset(images.astype(np.uint8), labels, 4, (0.5,) * 3, (0.25,) * 3, "synthetic")

  return Setting("synthetic", sample(80), sample(40), num_forget=8)


def table_rows(table: str, which: int = 0) -> list[str]:
  """The body rows (after header and rule) of the ``which``-th Markdown table of ``table``."""
  tables = [[]]
  for line in table.strip().splitlines():
    if line.startswith("|"):
      tables[-1].append(line)
    elif tables[-1]:
      tables.append([])
  return [t for t in tables if t][which][2:]


@pytest.fixture
def tiny(monkeypatch):
  monkeypatch.setitem(data_settings.SETTINGS, "synthetic", synthetic_setting)
  return ExperimentConfig(
    name="tiny",
    setting="synthetic",
    width=2,
    pretrain_epochs=2,
    pretrain_batch_size=16,
    unlearn=UnlearnConfig(epochs=2, batch_size=16),
    forget_lr={"sgd": 0.01, "dual": 1e-3},
    methods=(SFRon(),),
    optimizers=("sgd", "dual"),
    seeds=(1,),
  )


def test_run_writes_runs_table_and_plot_then_skips_finished_work(tiny, tmp_path, monkeypatch):
  plotted = []
  real_plot = E.plot_curves
  monkeypatch.setattr(
    E, "plot_curves", lambda *a, **k: plotted.append((a, k)) or real_plot(*a, **k)
  )
  run_table(tiny, tmp_path)
  names = sorted(p.name for p in (tmp_path / "runs").iterdir())
  runs = ["Original-seed1", "RT-seed1", "SFRon-dual-seed1", "SFRon-sgd-seed1"]
  assert names == sorted(f"{run}.{kind}" for run in runs for kind in ("json", "npz"))
  result = json.loads((tmp_path / "runs" / "SFRon-dual-seed1.json").read_text())
  # Beside each JSON, the per-sample scores the reference-model attacks read: the same
  # forget-vs-test AUC as the JSON's logit-scaled-confidence attack.
  with np.load(tmp_path / "runs" / "SFRon-dual-seed1.npz") as scores:
    assert scores["forget"].shape == (8,) and scores["forget"].dtype == np.float32
    assert scores["test"].shape == (40,)  # the synthetic setting's sets
    auc = E.mia.roc_auc(scores["forget"], scores["test"])
  assert auc == pytest.approx(result["mia"]["attacks"]["logit_confidence"]["auc"], abs=1e-6)
  assert {"UA", "RA", "TA", "MIA"} <= result.keys()
  assert len(result["curve"]) == 2  # SFRon is tracked every epoch
  assert result["hyperparameters"] == {
    "epochs": 2,
    "batch_size": 16,
    "forget_lr": 1e-3,
    "retain_lr": 0.01,
    "augment": False,
    "alpha": 25.0,
    "lambd": 0.5,
    "freq": 5,
    "iters": None,
    "max_norm": 7.0,
  }
  assert set(result["seconds"]) == {
    "pretraining",
    "retraining",
    "unlearning",
    "curve_evaluation",
    "evaluation",
  }
  # Training times come from the checkpoints, so later sittings report them too.
  assert (
    result["seconds"]["retraining"]
    == checkpoint.read_metadata(tmp_path / "checkpoints" / "retrain-seed1")["total_seconds"]
    > 0
  )
  table = (tmp_path / "table.md").read_text()
  rows = [line.split(" | ")[0] for line in table_rows(table)]
  assert rows == ["| RT", "| Original", "| SFRon (sgd)", "| SFRon (dual)"]  # the config's order
  assert "Forget learning rates: SFRon (sgd) 0.01, SFRon (dual) 0.001." in table
  # The membership-inference table: every row, RT at no gap from itself, and the ROC plot.
  assert set(result["mia"]["attacks"]) == set(E.mia.SCORES)
  assert len(result["mia"]["roc_loss"]) == len(E.mia.ROC_FPRS)
  attack_rows = table_rows(table, 1)
  assert [line.split(" | ")[0] for line in attack_rows] == rows
  assert attack_rows[0].count("(0.000)") == len(E.mia.SCORES) and "| +0.0 |" in attack_rows[0]
  assert (tmp_path / "roc.png").stat().st_size > 0
  assert " ± " not in table and table.strip().splitlines()[4].endswith("| 0.00 | n/a |")  # 1 seed
  assert (tmp_path / "table.csv").exists() and (tmp_path / "curves.png").stat().st_size > 0
  # The curves start at epoch 0, the original model of the seed, and the title names the seeds.
  ((args, kwargs),) = plotted  # the curves (the ROC has a plot function of its own)
  original = json.loads((tmp_path / "runs" / "Original-seed1.json").read_text())
  curve = args[0]["SFRon (dual)"]
  assert curve.shape == (1, 3, 4)
  np.testing.assert_array_equal(curve[0, 0], [original[m.name] for m in METRICS])
  np.testing.assert_array_equal(curve[0, 2], [result[m.name] for m in METRICS])
  assert "tiny" in kwargs["title"] and "seeds [1]" in kwargs["title"]

  # A second invocation finds every run: no model is trained, restored or unlearned again.
  def fail(*args, **kwargs):
    raise AssertionError("finished work was redone")

  monkeypatch.setattr(runner, "unlearn", fail)
  monkeypatch.setattr(runner, "train_classifier", fail)
  monkeypatch.setitem(data_settings.SETTINGS, "synthetic", fail)
  before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
  run_table(tiny, tmp_path)
  assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}

  # The table covers only the selected part of the grid.
  run_table(dataclasses.replace(tiny, optimizers=("dual",)), tmp_path)
  table = (tmp_path / "table.md").read_text()
  assert [line.split(" | ")[0] for line in table_rows(table)] == [
    "| RT",
    "| Original",
    "| SFRon (dual)",
  ]

  # Run files of the earlier flat layout (every method's hyper-parameters in every run) count.
  path = tmp_path / "runs" / "SFRon-dual-seed1.json"
  run = json.loads(path.read_text())
  flat = {k: run["hyperparameters"][k] for k in ("epochs", "batch_size", "forget_lr", "retain_lr")}
  flat.update(augment=False, salun_ratio=0.5, scrub_alpha=0.5, scrub_gamma=1.0, sfron_alpha=25.0)
  flat.update(sfron_lambda=0.5, sfron_freq=5, sfron_iters=None, sfron_max_norm=7.0)
  E.save_run_json(path, {**run, "hyperparameters": flat})
  run_table(tiny, tmp_path)
  E.save_run_json(path, {**run, "hyperparameters": {**flat, "sfron_lambda": 0.6}})
  with pytest.raises(ValueError, match="other hyper-parameters"):
    run_table(tiny, tmp_path)
  E.save_run_json(path, run)

  # Another model or pretraining under the same out directory is refused.
  assert json.loads((tmp_path / "experiment.json").read_text())["width"] == 2
  with pytest.raises(ValueError, match="another setting, model or pretraining"):
    run_table(dataclasses.replace(tiny, width=4), tmp_path)
  with pytest.raises(ValueError, match="another setting, model or pretraining"):
    run_table(dataclasses.replace(tiny, original_schedule="reference"), tmp_path)

  # Other hyper-parameters under the same out directory are refused instead of silently reused.
  with pytest.raises(ValueError, match="other hyper-parameters"):
    run_table(dataclasses.replace(tiny, forget_lr={"sgd": 0.01, "dual": 0.5}), tmp_path)
  with pytest.raises(ValueError, match="other hyper-parameters"):
    run_table(dataclasses.replace(tiny, methods=(SFRon(lambd=0.6),)), tmp_path)


def test_an_unfinished_row_is_compared_with_rt_on_its_own_seeds(tiny, tmp_path):
  def save(method, optimizer, seed, ua, ra, ta, mia):
    E.save_run_json(
      tmp_path / "runs" / f"{method}-{optimizer}-seed{seed}.json",
      {
        "config": "tiny",
        "method": method,
        "optimizer": optimizer,
        "seed": seed,
        "UA": ua,
        "RA": ra,
        "TA": ta,
        "MIA": mia,
        "curve": [],
      },
    )

  save("RT", "sgd", 1, 10.0, 100.0, 90.0, 60.0)
  save("RT", "sgd", 2, 20.0, 100.0, 80.0, 70.0)
  save("SFRon", "dual", 1, 12.0, 99.0, 89.0, 61.0)  # seed 2 not run yet
  table = write_table(tmp_path, dataclasses.replace(tiny, seeds=(1, 2)))
  row = next(line for line in table.splitlines() if line.startswith("| SFRon (dual)"))
  # Gaps to RT seed 1 alone: 2, 1, 1, 1 -> 1.25 (against the two-seed RT mean it would be 3.00).
  assert row.split(" | ")[-2] == "1.25"
  assert "SFRon (dual): seeds [1] only" in table


def test_a_config_needs_a_forget_lr_per_optimizer(tiny):
  with pytest.raises(ValueError, match=r"no forget learning rate for \['SFRon/adam'\]"):
    dataclasses.replace(tiny, optimizers=("sgd", "adam"))
  # A method's own forget lr takes precedence over its optimizer's.
  config = dataclasses.replace(tiny, forget_lr={"sgd": 0.01, "dual": 1e-3, "SFRon/dual": 3e-3})
  assert config.unlearn_config("SFRon", "dual").forget_lr == 3e-3
  assert config.unlearn_config("SFRon", "sgd").forget_lr == 0.01
  config = dataclasses.replace(tiny, forget_lr={"SFRon/sgd": 0.01, "SFRon/dual": 1e-3})
  assert config.unlearn_config("SFRon", "sgd").forget_lr == 0.01
  for key in ("Salun/dual", "SalUn/duel", "duel"):  # a typo is refused, not ignored
    with pytest.raises(ValueError, match=f"forget_lr key '{key}' is not OPTIMIZER or"):
      dataclasses.replace(tiny, forget_lr={"sgd": 0.01, "dual": 1e-3, key: 1.0})


def test_a_bad_data_root_leaves_no_directory_behind(tmp_path):
  config = ExperimentConfig(name="c", setting="fashion_mnist_tiny", forget_lr={"sgd": 1, "dual": 1})
  with pytest.raises(FileNotFoundError, match="no-such-dir"):
    run_table(config, tmp_path / "out", data_root=tmp_path / "no-such-dir")
  assert not (tmp_path / "out").exists()


def test_a_sweep_picks_each_pairs_lowest_gap_then_runs_every_seed(tiny, tmp_path, monkeypatch):
  config = dataclasses.replace(tiny, methods=(RL(),), seeds=(1, 2))
  grid = {"sgd": (0.01, 0.1), "dual": (1e-3,)}
  table = run_sweep(config, tmp_path, grid)
  points = {p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()}
  assert points == {"forget_lr=0.001", "forget_lr=0.01", "forget_lr=0.1"}
  gaps = {v: runner.read_avg_gaps(tmp_path / "sweep" / f"forget_lr={v:g}") for v in (0.01, 0.1)}
  best = min((0.01, 0.1), key=lambda v: gaps[v][("RL", "sgd")])
  summary = (tmp_path / "sweep" / "summary.md").read_text()
  assert f"| RL | sgd | 0.01: {gaps[0.01]['RL', 'sgd']:.2f}, 0.1: " in summary
  assert f"| {best:g} (edge) |" in summary and "| RL | dual | 0.001: " in summary
  # The final table: every seed at the chosen rates; the selection seed's run is the sweep's.
  for optimizer, lr in (("sgd", best), ("dual", 1e-3)):
    for seed in (1, 2):
      run = json.loads((tmp_path / "runs" / f"RL-{optimizer}-seed{seed}.json").read_text())
      assert run["hyperparameters"]["forget_lr"] == lr
  point = tmp_path / "sweep" / f"forget_lr={best:g}" / "runs" / "RL-sgd-seed1.json"
  assert point.read_text() == (tmp_path / "runs" / "RL-sgd-seed1.json").read_text()
  with (
    np.load(point.with_suffix(".npz")) as a,
    np.load(tmp_path / "runs" / "RL-sgd-seed1.npz") as b,
  ):
    np.testing.assert_array_equal(a["forget"], b["forget"])  # its per-sample scores come along
  assert not (tmp_path / "sweep" / "forget_lr=0.1" / "runs" / "RL-sgd-seed2.json").exists()
  assert f"RL (sgd) {best:g}, RL (dual) 0.001" in table
  # Every table shares the models: one original and one retrained model per seed.
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
    "original",
    "retrain-seed1",
    "retrain-seed2",
  ]

  # The stacked runner: the chosen sgd row's two seeds as one vmapped program, from the same
  # models, gives the loop's runs.
  stacked = tmp_path / "stacked"
  shutil.copytree(tmp_path / "checkpoints", stacked / "checkpoints")
  final = dataclasses.replace(config, optimizers=("sgd",), forget_lr={"sgd": best})
  run_table(final, stacked, vmap=True)
  for seed in (1, 2):
    name = f"RL-sgd-seed{seed}.json"
    loop, vmapped = (json.loads((d / "runs" / name).read_text()) for d in (tmp_path, stacked))
    assert vmapped["seconds"]["stack_size"] == 2
    for metric, size in (("UA", 8), ("RA", 72), ("TA", 40)):  # at most one sample apart
      assert abs(loop[metric] - vmapped[metric]) <= 100 / size + 1e-9, (name, metric)
