"""Runs an unlearning table: methods x optimizers x seeds against retrained references.

  python -m experiments.run                       # the embedded CPU default
  python -m experiments.run --config fashion_mnist_small --out runs/fashion_mnist_small
  python -m experiments.run --config cifar10 --data-root /data/cifar10 --methods SalUn SFRon

For a config it (1) trains the original model on the whole training pool, (2) retrains a
reference model on each seed's retain set, (3) unlearns with every method x optimizer x seed, and
(4) writes under ``--out``: ``runs/*.json`` (metrics and the wall time of each phase per run),
``table.md``, ``table.csv`` and ``curves.png`` (metrics over unlearning epochs, seed bands).
Models are Orbax checkpoints under ``checkpoints/`` (resumed if interrupted, reused by every
run); finished runs are found and skipped, so a long table can be built over several sittings.
"""

import argparse
import dataclasses
import json
import pathlib
import time

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from dualoptim_jax import checkpoint
from dualoptim_jax import data as D
from dualoptim_jax import eval as E
from dualoptim_jax.models import ResNet18
from dualoptim_jax.train import train_classifier
from dualoptim_jax.unlearn import METHODS, OPTIMIZERS, TrainState, predict, unlearn
from experiments.configs import CONFIGS, ExperimentConfig


def load_setting(config: ExperimentConfig, root):
  """(pool, test, forget positions of a seed) for the config's dataset."""
  if config.dataset in ("fashion_mnist_small", "fashion_mnist_tiny"):
    small = config.dataset == "fashion_mnist_small"
    pool, test = D.fashion_mnist_pool(500 if small else 100, root, None if small else 1000)
  elif config.dataset in ("cifar10", "cifar100", "svhn", "tiny_imagenet"):
    train, test = D.load_dataset(config.dataset, root)
    if config.dataset == "tiny_imagenet":
      pool = train
    else:  # The reference's 10% per-class validation hold-out, always with seed 1 (see README).
      pool = train.subset(D.holdout_split(train.labels, 0.1, seed=1)[0])
  else:
    raise ValueError(f"Unknown dataset {config.dataset!r} in config {config.name!r}.")

  def forget_idx(seed: int):
    return D.random_forget_indices(len(pool), len(pool) // 10, seed + config.split_seed_offset)

  return pool, test, forget_idx


def new_model(config: ExperimentConfig, data: D.ArrayDataset, seed: int) -> nnx.Module:
  return ResNet18(data.num_classes, width=config.width, mean=data.mean, std=data.std,
                  rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")))


def pretrain(config, dataset, directory, seed, desc):
  """Trains (or restores) a model; returns its graphdef, state and training wall time in seconds,
  summed over every sitting that trained it (None for checkpoints that did not record it)."""
  graphdef, state = train_classifier(
      new_model(config, dataset, seed), dataset, epochs=config.pretrain_epochs,
      batch_size=config.pretrain_batch_size, lr=config.pretrain_lr,
      augment=config.pretrain_augment, seed=seed, checkpoint_dir=directory, desc=desc)
  return graphdef, state, checkpoint.read_metadata(directory).get("total_seconds")


def evaluate(graphdef, state: TrainState, split: D.UnlearningSplit) -> dict[str, float]:
  def logits(dataset):
    return E.predict_logits(lambda x: predict(graphdef, state.params, state.batch_stats, x),
                            D.eval_batches(dataset, 500))
  return E.unlearning_metrics(logits(split.forget), logits(split.retain), logits(split.test))


def run_one(config, method, optimizer, seed, graphdef, original, split, out, wall):
  """One unlearning run; writes its JSON (metrics, per-epoch curve if tracked, phase times)."""
  path = out / "runs" / f"{method}-{optimizer}-seed{seed}.json"
  hyperparameters = dataclasses.asdict(config.unlearn_config(method, optimizer))
  if path.exists():
    saved = json.loads(path.read_text()).get("hyperparameters")
    if saved != hyperparameters:
      raise ValueError(f"{path} was run with other hyper-parameters ({saved}); use another --out.")
    return
  curve, curve_seconds = [], [0.0]

  def on_epoch(epoch, state):
    jax.block_until_ready(state)  # queued train steps count as unlearning, not evaluation
    start = time.perf_counter()
    curve.append(evaluate(graphdef, state, split))
    curve_seconds[0] += time.perf_counter() - start

  start = time.perf_counter()
  state = unlearn(method, optimizer, graphdef, original, split,
                  config.unlearn_config(method, optimizer), seed=seed,
                  on_epoch=on_epoch if method in config.track_epochs else None,
                  progress=lambda it, total: tqdm(it, total=total, leave=False,
                                                  desc=f"{method}/{optimizer}/seed {seed}"))
  jax.block_until_ready(state)
  unlearn_seconds = time.perf_counter() - start - curve_seconds[0]
  start = time.perf_counter()
  metrics = evaluate(graphdef, state, split)
  E.save_run_json(path, {
      "config": config.name, "method": method, "optimizer": optimizer, "seed": seed, **metrics,
      "curve": curve, "hyperparameters": hyperparameters,
      "seconds": {**wall, "unlearning": unlearn_seconds, "curve_evaluation": curve_seconds[0],
                  "evaluation": time.perf_counter() - start},
  })


def summarize(out: pathlib.Path, config: ExperimentConfig) -> str:
  """Writes table.md, table.csv and curves.png from the run JSONs of the config's methods,
  optimizers and seeds; returns the Markdown table."""
  # Rows: RT, Original, then the methods and optimizers in the config's order.
  order = [("RT", "sgd"), ("Original", "sgd")] + [
      (m, o) for m in config.methods for o in config.optimizers]
  runs = [r for r in E.load_runs(out / "runs") if r.get("config") == config.name
          and r["seed"] in config.seeds and (r["method"], r["optimizer"]) in order]
  groups = E.group_runs(runs)
  reference = groups.pop(("RT", "sgd"), None)
  if not reference:
    raise FileNotFoundError(f"No retrained-reference runs under {out / 'runs'}.")
  rows, csv_rows, curves = {"RT": E.summarize(reference, reference)}, {}, {}
  rt_seeds, notes = sorted(r["seed"] for r in reference), []
  for (method, optimizer), group in sorted(groups.items(), key=lambda g: order.index(g[0])):
    label = method if method == "Original" else f"{method} ({optimizer})"
    seeds = sorted(r["seed"] for r in group)
    if seeds != rt_seeds:  # an unfinished row: compare it with RT on its own seeds
      notes.append(f"{label}: seeds {seeds} only; its gaps are to RT on those seeds.")
    summary = E.summarize(group, [r for r in reference if r["seed"] in seeds])
    rows[label] = csv_rows[(method, optimizer)] = summary
    if all(r["curve"] for r in group):
      curves[f"{method} ({optimizer})"] = np.array(
          [[[epoch[m] for m in E.METRICS] for epoch in r["curve"]] for r in group])
  table = E.markdown_table(rows) + "".join(f"\n{note}\n" for note in notes)
  (out / "table.md").write_text(f"# {config.name}: seeds {rt_seeds}\n\n{table}\n")
  E.write_csv(csv_rows, out / "table.csv")
  if curves:
    E.plot_metrics_over_epochs(curves, out / "curves.png",
                               ref=E.reference(reference))
  return table


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="default", choices=sorted(CONFIGS))
  parser.add_argument("--out", type=pathlib.Path, help="run directory (default runs/<config>)")
  parser.add_argument("--data-root", help="dataset directory (default: the dataset's own)")
  parser.add_argument("--methods", nargs="+", choices=sorted(METHODS))
  parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS)
  parser.add_argument("--seeds", nargs="+", type=int)
  parser.add_argument("--forget-lr", nargs="+", default=[], metavar="OPTIMIZER=LR",
                      help="override forget learning rates, e.g. dual=3e-4 sgd=0.02 (use a "
                           "separate --out per setting: finished runs are found by name)")
  args = parser.parse_args(argv)

  config = CONFIGS[args.config]
  forget_lr = dict(config.forget_lr)
  for item in args.forget_lr:
    name, _, value = item.partition("=")
    if name not in OPTIMIZERS or not value:
      parser.error(f"--forget-lr takes OPTIMIZER=LR with OPTIMIZER in {OPTIMIZERS}, got {item!r}")
    forget_lr[name] = float(value)
  config = dataclasses.replace(
      config, methods=tuple(args.methods or config.methods),
      optimizers=tuple(args.optimizers or config.optimizers),
      seeds=tuple(args.seeds or config.seeds), forget_lr=forget_lr)
  out = args.out or pathlib.Path("runs") / config.name
  (out / "runs").mkdir(parents=True, exist_ok=True)
  pool, test, forget_idx = load_setting(config, args.data_root)

  graphdef, original, seconds = pretrain(config, pool, out / "checkpoints" / "original", 0,
                                         "original")
  wall = {"pretraining": seconds}
  grid = [(m, o) for m in config.methods for o in config.optimizers]
  for seed in config.seeds:
    split = D.make_split(pool, test, forget_idx(seed))
    _, retrained, seconds = pretrain(config, split.retain,
                                     out / "checkpoints" / f"retrain-seed{seed}", seed,
                                     f"retrain seed {seed}")
    wall_seed = {**wall, "retraining": seconds}
    # The retrained reference, and the original model before unlearning for comparison.
    for name, state in (("RT", retrained), ("Original", original)):
      path = out / "runs" / f"{name}-seed{seed}.json"
      if not path.exists():
        E.save_run_json(path, {"config": config.name, "method": name, "optimizer": "sgd",
                               "seed": seed, **evaluate(graphdef, state, split),
                               "curve": [], "seconds": wall_seed})
    for method, optimizer in tqdm(grid, desc=f"seed {seed}"):
      run_one(config, method, optimizer, seed, graphdef, original, split, out, wall_seed)
  print(summarize(out, config))
  print(f"\nResults written under {out}")


if __name__ == "__main__":
  main()
