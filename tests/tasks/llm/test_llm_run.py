"""The TOFU runner end to end on a tiny model: files, caches, the gate's verdict, bad input."""

import dataclasses
import json
import os

import pytest

from dualoptim_jax.data import tofu
from dualoptim_jax.tasks.llm import run as runner
from dualoptim_jax.tasks.llm.evaluate import EvalConfig
from dualoptim_jax.tasks.llm.finetune import FinetuneConfig
from experiments import run as cli

pytestmark = pytest.mark.skipif(
  not tofu.TOFU_ROOT.is_dir() and not os.environ.get("CI"), reason=f"no {tofu.TOFU_ROOT}"
)
TINY = runner.TofuConfig(
  name="tiny",
  setting="tofu_mini",
  dim=32,
  layers=1,
  heads=2,
  finetune=FinetuneConfig(epochs=1, max_epochs=2, batch_size=32, buckets=(96, 128)),
  eval=EvalConfig(
    batch_size=32, buckets=(128, 256), prompt_buckets=(64, 96), max_new_tokens=8, size=6
  ),
)


def test_build_models_writes_scores_and_reuses_models_and_evaluations(tmp_path, monkeypatch):
  report = runner.build_models(TINY, tmp_path, progress=False)
  saved = json.loads((tmp_path / "scores.json").read_text())
  assert saved == json.loads(json.dumps(report))
  target, retain = report["results"]["target"], report["results"]["retain"]
  assert (target["train_examples"], retain["train_examples"]) == (800, 720)
  examples = runner._Pipeline(TINY, tmp_path).train("target", False)[1]
  per_epoch = tofu.num_bucket_batches([len(ids) for ids, _ in examples], 32, (96, 128))
  # Two epochs memorise nothing: the gate fails after the first, and training stops at max_epochs.
  assert not target["gate"] and not retain["gate"]
  assert target["epochs"] == retain["epochs"] == 2 and target["steps"] == 2 * per_epoch
  assert len(target["sets"]["forget"]["truth_ratios"]) == 6
  assert retain["scores"]["FQ"] == pytest.approx(1.0)  # the retain model against itself
  assert "| target | FAIL |" in (tmp_path / "scores.md").read_text()
  assert (tmp_path / "checkpoints" / "retain_forget10_task1").is_dir()

  def fail(*args, **kwargs):
    raise AssertionError("a finished model or evaluation ran again")

  monkeypatch.setattr(runner, "evaluate_set", fail)
  monkeypatch.setattr(runner, "memorisation", fail)
  again = runner.build_models(TINY, tmp_path, progress=False)
  assert again["results"]["target"]["sets"] == target["sets"]


def test_pretrained_configs_need_both_model_folders(tmp_path, capsys):
  with pytest.raises(ValueError, match="give the target and the retain model folders"):
    runner.build_models(dataclasses.replace(TINY, pretrained=True), tmp_path)
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--config", "tofu_ft_phi-1.5", "--model-path", str(tmp_path), "--out", str(tmp_path)])
  assert exit_info.value.code == 1
  assert "retain model folders" in capsys.readouterr().err
  with pytest.raises(ValueError, match="eval_sets must include 'forget'"):
    dataclasses.replace(TINY, eval_sets=("retain", "books"))


def test_the_cli_passes_split_and_paths(monkeypatch, tmp_path):
  seen, unlearned = [], []
  monkeypatch.setattr(cli, "build_models", lambda config, out, root, tok, **kw: seen.append(config))
  monkeypatch.setattr(
    cli, "run_unlearning", lambda config, *args, **kw: unlearned.append(config) or ""
  )
  (tmp_path / "scores.md").write_text("table")
  out = ["--out", str(tmp_path)]
  cli.main(["--config", "tofu_cpu", "--forget", "forget05", "--task", "3", "--models-only", *out])
  assert (seen[0].name, seen[0].forget, seen[0].task, seen[0].dim) == (
    "tofu_cpu",
    "forget05",
    3,
    256,
  )
  assert seen[0].repeats == (3,) and not unlearned  # --task alone: that task only
  argv = ["--config", "tofu_cpu", "--methods", "IDK+AP", "--optimizers", "dual", "plus8"]
  cli.main([*argv, "--tasks", "2", "4", "--forget-lr-ratios", "1", "2", *out])
  config = unlearned[0]
  assert (config.methods, config.optimizers) == (("IDK+AP",), ("dual", "plus8"))
  assert (config.repeats, config.forget_lr_ratios) == ((2, 4), (1.0, 2.0))
  cli.main([*argv, *out])  # the config's own grid, one per optimizer, and tasks
  assert (unlearned[1].ratios("dual"), unlearned[1].repeats) == ((1.0, 3.0, 10.0), (1, 2, 3))
  # 8-bit DualOptim+ takes 32-bit DualOptim+'s chosen ratio; without it, it grids plus's values.
  assert unlearned[1].ratios("plus8") == (1.0, 3.0, 10.0)
  assert unlearned[1].ratio_source("plus8") is None


def test_tofu_configs_refuse_unknown_methods_and_optimizers(capsys):
  for argv in (["--methods", "SalUn"], ["--optimizers", "sgd"]):
    with pytest.raises(SystemExit) as exit_info:
      cli.main(["--config", "tofu_mini", *argv])
    assert exit_info.value.code == 1
    assert "Unknown" in capsys.readouterr().err


def test_flags_of_the_other_kind_of_config_are_refused(capsys):
  for argv, flag in (
    (["--config", "tofu_mini", "--seeds", "1"], "--seeds"),
    (["--config", "default", "--forget", "forget05"], "--forget"),
    (["--config", "default", "--forget-lr-ratios", "2"], "--forget-lr-ratios"),
  ):
    with pytest.raises(SystemExit) as exit_info:
      cli.main(argv)
    assert exit_info.value.code == 2 and flag in capsys.readouterr().err
