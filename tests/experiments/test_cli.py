"""The command line: which config it builds from the flags."""

import pytest

from dualoptim_jax.tasks.classification import RL, SCRUB, SFRon
from experiments import configs, run


@pytest.fixture
def captured(monkeypatch):
  seen = []
  monkeypatch.setattr(
    run,
    "run_table",
    lambda config, out, root, **options: seen.append((config, out, root, options)) or "table",
  )
  return seen


def test_flags_select_part_of_the_config(captured, tmp_path):
  run.main(
    [
      "--config",
      "cifar10",
      "--out",
      str(tmp_path),
      "--data-root",
      "/data/cifar",
      "--methods",
      "SFRon",
      "SCRUB",
      "--optimizers",
      "dual",
      "--seeds",
      "2",
      "3",
      "--forget-lr",
      "dual=5e-4",
    ]
  )
  ((config, out, root, options),) = captured
  # The config's own SFRon (1,500 iterations), SCRUB as the config has it, in the order asked.
  assert config.methods == (SFRon(iters=1500), SCRUB())
  assert config.optimizers == ("dual",) and config.seeds == (2, 3)
  assert config.unlearn_config("SCRUB", "dual").forget_lr == 5e-4
  assert (out, root) == (tmp_path, "/data/cifar")
  assert options == {"plan": None, "vmap": False}  # one device: no mesh


def test_a_method_outside_the_config_runs_with_its_defaults(captured):
  run.main(["--config", "default", "--methods", "SalUn", "RL"])
  ((config, out, _, _),) = captured
  assert [m.name for m in config.methods] == ["SalUn", "RL"] and config.methods[1] == RL()
  assert str(out) == "runs/default"
  assert configs.CONFIGS["default"].methods == (RL(), SFRon())  # the config itself is unchanged


def test_a_bad_forget_lr_flag_is_refused(captured, capsys):
  with pytest.raises(SystemExit, match="2"):  # argparse's usage error
    run.main(["--forget-lr", "duel=1e-3"])
  assert "--forget-lr takes OPTIMIZER=LR" in capsys.readouterr().err
  assert not captured


def test_a_missing_data_root_is_one_line_and_leaves_nothing_behind(tmp_path, capsys):
  with pytest.raises(SystemExit, match="1"):
    run.main(["--data-root", str(tmp_path / "no-data"), "--out", str(tmp_path / "out")])
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "no-data" in err[0] and "error" in err[0]
  assert not (tmp_path / "out").exists()


def test_a_damaged_run_file_is_named(tmp_path, capsys):
  config = configs.CONFIGS["default"]
  runs = tmp_path / "runs"
  runs.mkdir()
  (runs / f"RL-sgd-seed{config.seeds[0]}.json").write_text('{"config": "default", "UA"')
  with pytest.raises(SystemExit, match="1"):
    run.main(["--out", str(tmp_path)])
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "RL-sgd-seed1.json is not valid JSON" in err[0]
  assert (runs / "RL-sgd-seed1.json").exists()  # nothing deleted


def test_sweep_flags_give_each_optimizer_its_grid(monkeypatch):
  seen = []
  monkeypatch.setattr(
    run, "run_sweep", lambda config, out, grid, root, **kw: seen.append((config, grid, kw)) or ""
  )
  run.main(
    ["--sweep", "forget_lr=1e-4,1e-3", "sgd:forget_lr=0.01,0.1", "--selection-seeds", "2", "--vmap"]
  )
  ((config, grid, options),) = seen
  assert grid == {"sgd": (0.01, 0.1), "dual": (1e-4, 1e-3)}
  assert options == {"selection_seeds": [2], "plan": None, "vmap": True}


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--sweep", "lr=1,2"], "--sweep takes"),
    (["--sweep", "forget_lr=1,-2"], "--sweep takes"),
    (["--sweep", "forget_lr=a"], "--sweep takes"),
    (["--sweep", "duel:forget_lr=1"], "'duel' is not among the optimizers"),
    (["--sweep", "sgd:forget_lr=1"], "no forget lrs for dual"),
    (["--sweep", "forget_lr=1", "--forget-lr", "sgd=1"], "leave out --forget-lr"),
    (["--selection-seeds", "1"], "the seeds of a --sweep"),
    (["--mesh", "data=2,model=2"], "Bad mesh"),
    (["--mesh", "data=4"], "needs 4 devices; there are 1"),
    (["--zero1"], "--zero1 needs several devices"),
    (["--vmap", "--mesh", "data=1"], "--vmap runs the stacked runs on one device"),
    (["--config", "tofu_mini", "--vmap"], "--vmap: not an option of the config tofu_mini"),
  ],
)
def test_bad_scale_out_flags_are_refused(flags, message, captured, capsys):
  with pytest.raises(SystemExit, match="2"):
    run.main(flags)
  assert message in capsys.readouterr().err
  assert not captured


def test_a_tofu_sweep_sets_the_ratio_grid(monkeypatch):
  seen = []
  monkeypatch.setattr(run, "run_unlearning", lambda config, *a, **k: seen.append(config) or "")
  run.main(["--config", "tofu_cpu", "--sweep", "forget_lr=2e-4,6e-4", "dual:forget_lr=2e-3"])
  ratios = seen[0].forget_lr_ratios
  assert ratios["shared"] == pytest.approx((1.0, 3.0)) and ratios["dual"] == pytest.approx((10.0,))


def test_multi_host_flags_join_the_processes_first(captured, monkeypatch):
  joined = []
  monkeypatch.setattr(run.distributed, "initialize", lambda *args: joined.append(args))
  run.main(["--coordinator", "host0:1234", "--num-processes", "2", "--process-id", "1"])
  assert joined == [("host0:1234", 2, 1)] and len(captured) == 1
  run.main(["--distributed"])  # the cluster's own description
  assert joined[1] == (None, None, None)
