r"""Reference-model membership attacks on a classification table: offline LiRA and RMIA, forget
set (members) against test set (non-members), for every run of the table.

  .venv/bin/python -m experiments.reference_attacks --config fashion_mnist_small \
      --out results/fashion_mnist_small --models 4
  .venv/bin/python -m experiments.reference_attacks --config default --out runs/default \
      --models 16

The reference models train with the table's pretraining recipe on random halves of the pool,
each sample in exactly half of them (``keep``, ``(pool, models)``, saved as ``keep.npy`` beside
their Orbax checkpoints under ``<out>/checkpoints/reference_models/``; a stopped command
resumes). Their logit-scaled confidences of the pool and the test set are cached there
(``scores.npz``). Each run's own scores come from ``runs/<run>.npz``, which the table writes
beside every run JSON; runs without one (tables written before it) are skipped. Both attacks are
offline, using only the reference models that did not train on a sample:

* LiRA (Carlini et al., 2022), `eval.mia.lira_offline` with one global std;
* RMIA (Zarifzadeh et al., 2024), `eval.mia.rmia`, with the test set as its population.

Writes ``<out>/reference_attacks.md`` and ``.json``: per row, mean ± population std over seeds of
each attack's AUC (gap to RT's), then LiRA's privleak against RT, best balanced accuracy, TPR at
1% FPR and TNR at 1% FNR (``.json`` has every metric of both attacks). Only runs of ``--config``
count. Cost: one pretraining per reference model on half the pool, then seconds.
"""

import argparse
import pathlib

import numpy as np
from scipy.special import expit

from dualoptim_jax import eval as E
from dualoptim_jax.data.batching import eval_batches
from dualoptim_jax.data.settings import load_setting
from dualoptim_jax.eval import mia
from dualoptim_jax.tasks.classification import metrics
from dualoptim_jax.tasks.classification.run import ORIGINAL, REFERENCE, pretrain
from experiments.configs import CONFIGS

ATTACKS = ("lira", "rmia")


def keep_masks(num_samples: int, num_models: int, seed: int = 0) -> np.ndarray:
  """``(samples, models)`` membership: every sample in exactly half of the models, at random."""
  if num_models < 2 or num_models % 2:
    raise ValueError(f"Need an even number of reference models (2 or more), got {num_models}.")
  ranks = np.random.default_rng(seed).random((num_samples, num_models)).argsort(axis=1)
  return ranks < num_models // 2


def logit_confidences(graphdef, state, data) -> np.ndarray:
  logits, labels = metrics.predict_logits(
    lambda x: metrics.predict(graphdef, state.params, state.model_state, x),
    eval_batches(data, 500),
  )
  return mia.membership_scores(logits, labels)["logit_confidence"]


def reference_scores(config, setting, directory: pathlib.Path, num_models: int) -> dict:
  """Trains (or restores) the reference models; returns ``keep`` and their pool and test scores,
  each ``(samples, models)``."""
  keep = keep_masks(len(setting.pool), num_models)
  keep_path, cache = directory / "keep.npy", directory / "scores.npz"
  if keep_path.is_file() and not np.array_equal(np.load(keep_path), keep):
    raise ValueError(
      f"{keep_path} holds the keep masks of another number of reference models: rerun with "
      f"that --models, or delete {directory} to train new ones."
    )
  if cache.is_file():
    with np.load(cache) as saved:
      if np.array_equal(saved["keep"], keep) and str(saved["config"]) == config.name:
        return dict(saved)
  directory.mkdir(parents=True, exist_ok=True)
  np.save(keep_path, keep)
  pool, test = [], []
  for k in range(num_models):
    members = setting.pool.subset(np.flatnonzero(keep[:, k]))
    graphdef, state, _ = pretrain(
      config,
      members,
      directory / f"model-{k}",
      1000 + k,
      f"reference model {k + 1}/{num_models}",
      schedule=config.original_schedule,
    )
    pool.append(logit_confidences(graphdef, state, setting.pool))
    test.append(logit_confidences(graphdef, state, setting.test))
  scores = {"keep": keep, "pool": np.stack(pool, 1), "test": np.stack(test, 1)}
  scores["config"] = np.asarray(config.name)
  E.save_arrays(cache, scores)
  return scores


def attack_run(target: dict, references: dict, forget_indices: np.ndarray) -> dict:
  """`eval.mia.audit` of LiRA and RMIA, forget (members) vs test (non-members), for one run's
  scores ``target`` (``{"forget", "test"}``, logit-scaled confidences, in the order of the pool
  positions ``forget_indices`` and of the test set)."""
  num_forget = len(forget_indices)
  if (
    target["forget"].shape != (num_forget,) or target["test"].shape != references["test"].shape[:1]
  ):
    raise ValueError(
      f"A run's scores ({target['forget'].shape} forget, {target['test'].shape} test) do not "
      f"match the setting ({num_forget} forget, {len(references['test'])} test samples)."
    )
  phi = np.concatenate([target["forget"], target["test"]]).astype(np.float64)
  reference = np.concatenate([references["pool"][forget_indices], references["test"]])
  keep = np.concatenate([references["keep"][forget_indices], np.zeros_like(references["test"])])
  keep = keep.astype(bool)
  lira = mia.lira_offline(phi, reference, keep)
  confidence = expit(phi)  # p_y, from log(p_y / (1 - p_y))
  population = confidence[num_forget:], expit(references["test"])
  rmia = mia.rmia(confidence, expit(reference), keep, *population)
  return {
    name: mia.audit(s[:num_forget], s[num_forget:]) for name, s in (("lira", lira), ("rmia", rmia))
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="fashion_mnist_small", choices=sorted(CONFIGS))
  parser.add_argument("--out", required=True, type=pathlib.Path, help="the table's --out")
  parser.add_argument("--models", type=int, default=4, help="reference models (even)")
  parser.add_argument("--data-root", default=None)
  args = parser.parse_args(argv)
  config = CONFIGS[args.config]
  if not (args.out / "runs").is_dir():
    parser.error(f"{args.out} holds no runs/: run the table first")
  runs, skipped = [], []  # the table's runs, checked before any reference model trains
  for path in sorted((args.out / "runs").glob("*.json")):
    run = E.load_run_json(path)
    if run.get("config") != config.name:
      continue
    if path.with_suffix(".npz").is_file():
      runs.append((path, run))
    else:
      skipped.append(path.stem)
  if not any(run["method"] == REFERENCE for _, run in runs):
    parser.error(
      f"no {config.name} run of {args.out}/runs has per-sample scores (runs/<run>.npz) for "
      f"{REFERENCE}; tables written before the scores were kept need their runs again"
    )
  setting = load_setting(config.setting, args.data_root)
  directory = args.out / "checkpoints" / "reference_models"
  try:
    references = reference_scores(config, setting, directory, args.models)
  except ValueError as error:
    parser.error(str(error))
  rows = {}
  for path, run in runs:
    with np.load(path.with_suffix(".npz")) as target:
      result = attack_run(dict(target), references, setting.split(run["seed"]).forget_idx)
    baseline = run["method"] in (REFERENCE, ORIGINAL)
    label = run["method"] if baseline else f"{run['method']} ({run['optimizer']})"
    rows.setdefault(label, []).append(result)
  order = [REFERENCE, ORIGINAL] + sorted(set(rows) - {REFERENCE, ORIGINAL})
  rows = {label: rows[label] for label in order if label in rows}
  table = (
    f"# {config.name}: reference-model attacks, forget vs test ({args.models} reference models, "
    "offline; mean ± population std over seeds; AUC gap to RT in parentheses)\n\n"
    + mia.attack_table(rows, rows[REFERENCE], score="lira", names=ATTACKS)
  )
  if skipped:
    table += f"\nSkipped (no per-sample scores): {', '.join(skipped)}.\n"
  E.write_text(args.out / "reference_attacks.md", table)
  E.save_run_json(
    args.out / "reference_attacks.json", {"models": args.models, "rows": rows, "skipped": skipped}
  )
  print(table)


if __name__ == "__main__":
  main()
