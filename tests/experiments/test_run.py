"""The experiment runner end to end on a tiny synthetic setting: outputs, and skipping finished work."""

import dataclasses
import json

import numpy as np
import pytest

from dualoptim_jax import checkpoint
from dualoptim_jax import eval as E
from dualoptim_jax.data import ArrayDataset, random_forget_indices
from dualoptim_jax.unlearn import UnlearnConfig
from experiments import configs, run


def synthetic_setting(config, root):
  rng = np.random.default_rng(0)
  prototypes = rng.integers(0, 256, (4, 8, 8, 3))

  def sample(n):
    labels = rng.integers(0, 4, n).astype(np.int32)
    images = np.clip(prototypes[labels] + rng.normal(0, 30, (n, 8, 8, 3)), 0, 255)
    return ArrayDataset(images.astype(np.uint8), labels, 4, (0.5,) * 3, (0.25,) * 3, "synthetic")

  pool = sample(80)
  return pool, sample(40), lambda seed: random_forget_indices(len(pool), 8, seed)


@pytest.fixture
def tiny(monkeypatch):
  config = configs.ExperimentConfig(
      name="tiny", dataset="synthetic", width=2, pretrain_epochs=2, pretrain_batch_size=16,
      unlearn=UnlearnConfig(epochs=2, batch_size=16), methods=("SFRon",),
      optimizers=("sgd", "dual"), seeds=(1,))
  monkeypatch.setitem(configs.CONFIGS, "tiny", config)
  monkeypatch.setattr(run, "load_setting", synthetic_setting)
  return config


def test_run_writes_runs_table_and_plot_then_skips_finished_work(tiny, tmp_path, monkeypatch):
  run.main(["--config", "tiny", "--out", str(tmp_path)])
  names = sorted(p.name for p in (tmp_path / "runs").iterdir())
  assert names == ["Original-seed1.json", "RT-seed1.json", "SFRon-dual-seed1.json",
                   "SFRon-sgd-seed1.json"]
  result = json.loads((tmp_path / "runs" / "SFRon-dual-seed1.json").read_text())
  assert {"UA", "RA", "TA", "MIA"} <= result.keys()
  assert len(result["curve"]) == 2  # SFRon is tracked every epoch
  assert set(result["seconds"]) == {"pretraining", "retraining", "unlearning",
                                    "curve_evaluation", "evaluation"}
  # Training times come from the checkpoints, so later sittings report them too.
  assert result["seconds"]["retraining"] == checkpoint.read_metadata(
      tmp_path / "checkpoints" / "retrain-seed1")["total_seconds"] > 0
  table = (tmp_path / "table.md").read_text()
  rows = [line.split(" | ")[0] for line in table.strip().splitlines()[4:]]
  assert rows == ["| RT", "| Original", "| SFRon (sgd)", "| SFRon (dual)"]  # the config's order
  assert (tmp_path / "table.csv").exists() and (tmp_path / "curves.png").stat().st_size > 0

  # A second invocation finds every run and checkpoint: nothing is trained or unlearned again.
  def fail(*args, **kwargs):
    raise AssertionError("finished work was redone")

  monkeypatch.setattr(run, "unlearn", fail)
  monkeypatch.setattr("dualoptim_jax.train.make_step", fail)
  before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
  run.main(["--config", "tiny", "--out", str(tmp_path)])
  assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}

  # The table covers only the selected part of the grid.
  run.main(["--config", "tiny", "--out", str(tmp_path), "--optimizers", "dual"])
  table = (tmp_path / "table.md").read_text()
  assert [line.split(" | ")[0] for line in table.strip().splitlines()[4:]] == [
      "| RT", "| Original", "| SFRon (dual)"]

  # Other hyper-parameters under the same --out are refused instead of silently reused.
  with pytest.raises(ValueError, match="other hyper-parameters"):
    run.main(["--config", "tiny", "--out", str(tmp_path), "--forget-lr", "dual=0.5"])


def test_an_unfinished_row_is_compared_with_rt_on_its_own_seeds(tiny, tmp_path):
  def save(method, optimizer, seed, ua, ra, ta, mia):
    E.save_run_json(tmp_path / "runs" / f"{method}-{optimizer}-seed{seed}.json", {
        "config": "tiny", "method": method, "optimizer": optimizer, "seed": seed,
        "UA": ua, "RA": ra, "TA": ta, "MIA": mia, "curve": []})

  save("RT", "sgd", 1, 10.0, 100.0, 90.0, 60.0)
  save("RT", "sgd", 2, 20.0, 100.0, 80.0, 70.0)
  save("SFRon", "dual", 1, 12.0, 99.0, 89.0, 61.0)  # seed 2 not run yet
  table = run.summarize(tmp_path, dataclasses.replace(tiny, seeds=(1, 2)))
  row = next(line for line in table.splitlines() if line.startswith("| SFRon (dual)"))
  # Gaps to RT seed 1 alone: 2, 1, 1, 1 -> 1.25 (against the two-seed RT mean it would be 3.00).
  assert row.split(" | ")[-2] == "1.25"
  assert "SFRon (dual): seeds [1] only" in table


def test_unknown_dataset_is_a_clear_error(tmp_path):
  config = dataclasses.replace(configs.CONFIGS["default"], dataset="mnist3d")
  with pytest.raises(ValueError, match="mnist3d"):
    run.load_setting(config, None)
