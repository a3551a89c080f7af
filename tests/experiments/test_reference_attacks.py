"""The reference-model attack command: keep masks, the attacks' wiring, files and resuming."""

import json

import numpy as np
import pytest

from dualoptim_jax import eval as E
from dualoptim_jax.data import settings as data_settings
from dualoptim_jax.tasks.classification import ExperimentConfig
from experiments import configs
from experiments import reference_attacks as RA
from tests.tasks.classification.test_run import synthetic_setting


@pytest.mark.parametrize("models", [2, 4, 16])
def test_every_sample_is_in_exactly_half_of_the_reference_models(models):
  keep = RA.keep_masks(1000, models, seed=3)
  assert keep.shape == (1000, models) and (keep.sum(axis=1) == models // 2).all()
  assert np.allclose(keep.mean(axis=0), 0.5, atol=0.06)  # each model: about half of the pool
  assert not np.array_equal(keep, RA.keep_masks(1000, models, seed=4))


@pytest.mark.parametrize("models", [0, 1, 3])
def test_an_odd_number_of_reference_models_is_refused(models):
  with pytest.raises(ValueError, match="even number of reference models"):
    RA.keep_masks(10, models)


def test_the_attacks_compare_a_forget_sample_with_the_models_that_did_not_train_on_it():
  """Pool of 40, models 4: the OUT models score every sample about N(0, 1), the IN models +8.
  A target that remembers its forget set (scores +3) is found by both attacks; if the IN models
  were counted, or the forget rows misread, the +8 would hide it."""
  rng = np.random.default_rng(0)
  keep = RA.keep_masks(40, 4)
  pool = rng.normal(0, 1, (40, 4)) + 8 * keep
  test = rng.normal(0, 1, (200, 4))
  references = {"keep": keep, "pool": pool, "test": test}
  forget = np.array([3, 17, 5, 30, 11, 24, 38, 0, 9, 21])
  remembered = {"forget": pool[forget].mean(1) - 8 * 0.5 + 3, "test": rng.normal(0, 1, 200)}
  result = RA.attack_run(remembered, references, forget)
  assert result["lira"]["auc"] > 0.95 and result["rmia"]["auc"] > 0.95
  forgotten = {"forget": rng.normal(0, 1, 10), "test": rng.normal(0, 1, 200)}
  result = RA.attack_run(forgotten, references, forget)
  assert 0.2 < result["lira"]["auc"] < 0.8 and 0.2 < result["rmia"]["auc"] < 0.8


def _identity_scores(n: int, seed: int) -> np.ndarray:
  """Scores that tell samples apart (from 0 to 10 over the set, as hard as each other set's)
  with a little noise."""
  return np.linspace(0, 10, n) + np.random.default_rng(seed).normal(0, 0.01, n)


@pytest.fixture
def table(tmp_path, monkeypatch):
  """A finished table of a synthetic setting (pool 80, test 40): RT, Original and one method, two
  seeds; one run predates the per-sample scores. A run scores a forget sample as the reference
  models do plus ``shift`` (Original: remembered; RT: not), so an attack that pairs a sample with
  another's reference scores finds nothing."""
  monkeypatch.setitem(data_settings.SETTINGS, "synthetic", synthetic_setting)
  config = ExperimentConfig(
    name="tiny",
    setting="synthetic",
    width=2,
    pretrain_epochs=1,
    forget_lr={"sgd": 0.1, "dual": 0.1},
  )
  monkeypatch.setitem(configs.CONFIGS, "tiny", config)
  setting = synthetic_setting(None)
  for seed in (1, 2):
    forget_idx = setting.split(seed).forget_idx
    for method, optimizer, shift in (
      ("RT", "sgd", 0.0),
      ("Original", "sgd", 0.5),
      ("RL", "dual", 0.1),
    ):
      name = method if method in ("RT", "Original") else f"{method}-{optimizer}"
      path = tmp_path / "runs" / f"{name}-seed{seed}.json"
      E.save_run_json(
        path, {"config": "tiny", "method": method, "optimizer": optimizer, "seed": seed}
      )
      forget = _identity_scores(80, seed)[forget_idx] + shift
      E.save_arrays(
        path.with_suffix(".npz"), {"forget": forget, "test": _identity_scores(40, seed)}
      )
  E.save_run_json(
    tmp_path / "runs" / "RL-sgd-seed1.json", {"config": "tiny", "method": "RL", "seed": 1}
  )
  E.save_run_json(tmp_path / "runs" / "other.json", {"config": "other", "method": "RL", "seed": 1})
  return tmp_path


def test_the_command_writes_a_row_per_method_and_trains_each_reference_model_once(
  table, monkeypatch
):
  trained = []

  def fake_pretrain(config, data, directory, seed, desc, plan=None, schedule="cosine"):
    trained.append((directory.name, len(data)))
    return None, seed, None

  monkeypatch.setattr(RA, "pretrain", fake_pretrain)
  monkeypatch.setattr(
    RA, "logit_confidences", lambda g, seed, data: _identity_scores(len(data), seed)
  )
  RA.main(["--config", "tiny", "--out", str(table), "--models", "2"])
  # Two models: each of the 80 pool samples trains exactly one of them.
  assert [d for d, _ in trained] == ["model-0", "model-1"] and sum(n for _, n in trained) == 80
  directory = table / "checkpoints" / "reference_models"
  np.testing.assert_array_equal(np.load(directory / "keep.npy"), RA.keep_masks(80, 2))
  text = (table / "reference_attacks.md").read_text()
  rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ")][1:]
  assert rows == ["| RT", "| Original", "| RL (dual)"]  # runs of other configs left out
  assert (
    "| +0.0 |" in text.splitlines()[4] and "Skipped (no per-sample scores): RL-sgd-seed1" in text
  )
  saved = json.loads((table / "reference_attacks.json").read_text())
  for attack in RA.ATTACKS:
    assert all(run[attack]["auc"] > 0.95 for run in saved["rows"]["Original"])
    assert all(0.2 < run[attack]["auc"] < 0.8 for run in saved["rows"]["RT"])

  monkeypatch.setattr(
    RA, "pretrain", lambda *a, **k: pytest.fail("a reference model trained again")
  )
  RA.main(["--config", "tiny", "--out", str(table), "--models", "2"])
  with pytest.raises(SystemExit):  # other masks beside the checkpoints
    RA.main(["--config", "tiny", "--out", str(table), "--models", "4"])


def test_a_table_without_per_sample_scores_is_refused_before_any_training(table, monkeypatch):
  for path in (table / "runs").glob("RT-*.npz"):
    path.unlink()
  monkeypatch.setattr(RA, "pretrain", lambda *a, **k: pytest.fail("a reference model trained"))
  with pytest.raises(SystemExit):
    RA.main(["--config", "tiny", "--out", str(table), "--models", "2"])
