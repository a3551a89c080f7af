"""A classification unlearning table: methods x optimizers x seeds against retrained references.

For an `ExperimentConfig`, `run_table` (1) trains the original model on the setting's whole pool,
(2) retrains a reference model on each seed's retain set, (3) unlearns with every method x
optimizer x seed, and (4) writes under ``out``: ``runs/*.json`` (metrics and the wall time of
each phase per run), ``table.md``, ``table.csv`` and ``curves.png`` (metrics over unlearning
epochs, seed bands). Models are Orbax checkpoints under ``checkpoints/`` (resumed if interrupted,
reused by every run); finished runs are found and skipped, and a seed whose runs are all finished
needs no model at all, so a long table can be built over several sittings.
"""

import dataclasses
import pathlib
import time
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from dualoptim_jax import eval as E
from dualoptim_jax.core import TrainState, checkpoint
from dualoptim_jax.data import ArrayDataset, UnlearningSplit, load_setting
from dualoptim_jax.models import ResNet18
from dualoptim_jax.tasks.classification.methods import (
  METHODS,
  Method,
  UnlearnConfig,
  hyperparameters,
  unlearn,
)
from dualoptim_jax.tasks.classification.metrics import METRICS, evaluate
from dualoptim_jax.tasks.classification.pretrain import train_classifier

REFERENCE, ORIGINAL = "RT", "Original"  # the rows of the retrained and the original model


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """One experiment: the setting, the model, the pretraining recipe (shared by the original model
  and the retrained reference), the unlearning recipe and the grid to run.

  Attributes:
    name: the config's name, recorded in every run.
    setting: a name from ``data.SETTINGS``.
    width: the ResNet-18 width.
    pretrain_epochs, pretrain_lr, pretrain_batch_size, pretrain_augment: the pretraining recipe.
    unlearn: the hyper-parameters every method shares; ``forget_lr`` is set per optimizer.
    forget_lr: optimizer name -> forget learning rate.
    methods: the methods, with their own hyper-parameters, in table order.
    optimizers: the optimizers, in table order.
    seeds: the forget-set seeds.
    track_epochs: names of the methods whose metrics are logged after every epoch.
  """

  name: str
  setting: str
  width: int = 16
  pretrain_epochs: int = 30
  pretrain_lr: float = 0.1
  pretrain_batch_size: int = 128
  pretrain_augment: bool = False
  unlearn: UnlearnConfig = UnlearnConfig()
  forget_lr: Mapping[str, float] = dataclasses.field(default_factory=dict)
  methods: tuple[Method, ...] = (
    METHODS["RL"],
    METHODS["SalUn"],
    METHODS["SCRUB"],
    METHODS["SFRon"],
  )
  optimizers: tuple[str, ...] = ("sgd", "dual")
  seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
  track_epochs: tuple[str, ...] = ("SFRon",)

  def __post_init__(self):
    object.__setattr__(self, "forget_lr", dict(self.forget_lr))  # a copy of its own
    missing = [o for o in self.optimizers if o not in self.forget_lr]
    if missing:
      raise ValueError(f"Config {self.name!r} has no forget learning rate for {missing}.")

  def unlearn_config(self, optimizer: str) -> UnlearnConfig:
    return dataclasses.replace(self.unlearn, forget_lr=self.forget_lr[optimizer])


def _new_model(config: ExperimentConfig, data: ArrayDataset, seed: int) -> nnx.Module:
  return ResNet18(
    data.num_classes,
    width=config.width,
    mean=data.mean,
    std=data.std,
    rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")),
  )


def pretrain(
  config: ExperimentConfig, dataset: ArrayDataset, directory: pathlib.Path, seed: int, desc: str
):
  """Trains (or restores) a model; returns its graphdef, state and training wall time in seconds,
  summed over every sitting that trained it (None for checkpoints that did not record it)."""
  graphdef, state = train_classifier(
    _new_model(config, dataset, seed),
    dataset,
    epochs=config.pretrain_epochs,
    batch_size=config.pretrain_batch_size,
    lr=config.pretrain_lr,
    augment=config.pretrain_augment,
    seed=seed,
    checkpoint_dir=directory,
    desc=desc,
  )
  return graphdef, state, checkpoint.read_metadata(directory).get("total_seconds")


def _run_path(out: pathlib.Path, method: str, optimizer: str | None, seed: int) -> pathlib.Path:
  """``runs/<method>-<optimizer>-seed<s>.json``; the baselines have no optimizer in the name."""
  name = method if optimizer is None else f"{method}-{optimizer}"
  return out / "runs" / f"{name}-seed{seed}.json"


# Run JSONs written before each method owned its hyper-parameters list every method's, flat.
_LEGACY_FIELDS = {
  "SalUn": {"ratio": "salun_ratio"},
  "SCRUB": {"alpha": "scrub_alpha", "gamma": "scrub_gamma"},
  "SFRon": {
    "alpha": "sfron_alpha",
    "lambd": "sfron_lambda",
    "freq": "sfron_freq",
    "iters": "sfron_iters",
    "max_norm": "sfron_max_norm",
  },
}


def _saved_hyperparameters(path: pathlib.Path) -> dict | None:
  """A run's hyper-parameters as `hyperparameters` writes them, whatever layout it was saved in."""
  run = E.load_run_json(path)
  saved = run.get("hyperparameters")
  if saved is None or "salun_ratio" not in saved:
    return saved
  shared = {f.name: saved[f.name] for f in dataclasses.fields(UnlearnConfig)}
  own = {new: saved[old] for new, old in _LEGACY_FIELDS.get(run["method"], {}).items()}
  return {**shared, **own}


def _check_hyperparameters(path: pathlib.Path, expected: dict) -> None:
  saved = _saved_hyperparameters(path)
  if saved != expected:
    raise ValueError(
      f"{path} was run with other hyper-parameters ({saved}, asked for "
      f"{expected}); use another --out."
    )


def run_one(
  config: ExperimentConfig,
  method: Method,
  optimizer: str,
  seed: int,
  graphdef: nnx.GraphDef,
  original: TrainState,
  split: UnlearningSplit,
  out: pathlib.Path,
  wall: dict,
) -> None:
  """One unlearning run; writes its JSON (metrics, per-epoch curve if tracked, phase times)."""
  unlearn_config = config.unlearn_config(optimizer)
  curve, curve_seconds = [], [0.0]

  def on_epoch(epoch, state):
    jax.block_until_ready(state)  # queued train steps count as unlearning, not evaluation
    start = time.perf_counter()
    curve.append(evaluate(graphdef, state, split))
    curve_seconds[0] += time.perf_counter() - start

  start = time.perf_counter()
  state = unlearn(
    method,
    optimizer,
    graphdef,
    original,
    split,
    unlearn_config,
    seed=seed,
    on_epoch=on_epoch if method.name in config.track_epochs else None,
    progress=lambda schedule: tqdm(
      schedule, leave=False, desc=f"{method.name}/{optimizer}/seed {seed}"
    ),
  )
  jax.block_until_ready(state)
  unlearn_seconds = time.perf_counter() - start - curve_seconds[0]
  start = time.perf_counter()
  metrics = evaluate(graphdef, state, split)
  E.save_run_json(
    _run_path(out, method.name, optimizer, seed),
    {
      "config": config.name,
      "method": method.name,
      "optimizer": optimizer,
      "seed": seed,
      **metrics,
      "curve": curve,
      "hyperparameters": hyperparameters(method, unlearn_config),
      "seconds": {
        **wall,
        "unlearning": unlearn_seconds,
        "curve_evaluation": curve_seconds[0],
        "evaluation": time.perf_counter() - start,
      },
    },
  )


def write_table(out: pathlib.Path, config: ExperimentConfig) -> str:
  """Writes table.md, table.csv and curves.png from the run JSONs of the config's methods,
  optimizers and seeds; returns the Markdown table."""
  order = [(REFERENCE, "sgd"), (ORIGINAL, "sgd")] + [
    (m.name, o) for m in config.methods for o in config.optimizers
  ]
  runs = [
    r
    for r in E.load_runs(out / "runs")
    if r.get("config") == config.name
    and r["seed"] in config.seeds
    and (r["method"], r["optimizer"]) in order
  ]
  groups = E.group_runs(runs)
  reference = groups.pop((REFERENCE, "sgd"), None)
  if not reference:
    raise FileNotFoundError(f"No retrained-reference runs under {out / 'runs'}.")
  originals = {r["seed"]: r for r in groups.get((ORIGINAL, "sgd"), [])}
  rows, csv_rows, curves = {REFERENCE: E.summarize(reference, reference, METRICS)}, {}, {}
  rt_seeds, notes = sorted(r["seed"] for r in reference), []
  for (method, optimizer), group in sorted(groups.items(), key=lambda g: order.index(g[0])):
    label = method if method == ORIGINAL else f"{method} ({optimizer})"
    seeds = sorted(r["seed"] for r in group)
    if seeds != rt_seeds:  # an unfinished row: compare it with RT on its own seeds
      notes.append(f"{label}: seeds {seeds} only; its gaps are to RT on those seeds.")
    summary = E.summarize(group, [r for r in reference if r["seed"] in seeds], METRICS)
    rows[label] = csv_rows[(method, optimizer)] = summary
    if all(r["curve"] and r["seed"] in originals for r in group):
      # Epoch 0 is the original model of the run's seed.
      curves[label] = np.array(
        [
          [[point[m.name] for m in METRICS] for point in [originals[r["seed"]], *r["curve"]]]
          for r in group
        ]
      )
  table = E.markdown_table(rows, METRICS) + "".join(f"\n{note}\n" for note in notes)
  (out / "table.md").write_text(f"# {config.name}: seeds {rt_seeds}\n\n{table}\n")
  E.write_csv(csv_rows, out / "table.csv", METRICS)
  if curves:
    E.plot_curves(
      curves,
      out / "curves.png",
      METRICS,
      ref=E.reference(reference, METRICS),
      title=f"{config.name}: metrics over unlearning epochs (epoch 0: the original "
      f"model), seeds {rt_seeds}",
    )
  return table


# What every run of an out directory shares: the setting, the model and its pretraining.
_RECIPE = (
  "setting",
  "width",
  "pretrain_epochs",
  "pretrain_lr",
  "pretrain_batch_size",
  "pretrain_augment",
)


def _recipe(config: ExperimentConfig) -> dict:
  return {name: getattr(config, name) for name in _RECIPE}


def _check_recipe(out: pathlib.Path, config: ExperimentConfig, *, record: bool) -> None:
  """Refuses an out directory whose ``experiment.json`` records another recipe; with ``record``,
  writes the file where it is missing."""
  path = out / "experiment.json"
  if path.exists():
    saved = E.load_run_json(path)
    if saved != _recipe(config):
      raise ValueError(
        f"{path} records another setting, model or pretraining ({saved}, asked for "
        f"{_recipe(config)}); use another --out."
      )
  elif record:
    E.save_run_json(path, _recipe(config))


def run_table(config: ExperimentConfig, out: pathlib.Path, data_root=None) -> str:
  """Runs every missing run of ``config`` under ``out``, then writes and returns its table.

  ``out/experiment.json`` records the setting, the model width and the pretraining recipe, and
  ``runs/*.json`` each run's hyper-parameters: an out directory of another recipe is refused.
  """
  _check_recipe(out, config, record=False)
  grid = [(m, o) for m in config.methods for o in config.optimizers]
  missing = {}
  for seed in config.seeds:
    todo = []
    for method, optimizer in grid:
      path = _run_path(out, method.name, optimizer, seed)
      expected = hyperparameters(method, config.unlearn_config(optimizer))
      if path.exists():
        _check_hyperparameters(path, expected)
      else:
        todo.append((method, optimizer))
    baselines = [_run_path(out, name, None, seed) for name in (REFERENCE, ORIGINAL)]
    if todo or not all(p.exists() for p in baselines):
      missing[seed] = todo

  if missing:
    setting = load_setting(config.setting, data_root)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    _check_recipe(out, config, record=True)
    graphdef, original, seconds = pretrain(
      config, setting.pool, out / "checkpoints" / "original", 0, "original"
    )
    wall = {"pretraining": seconds}
  for seed, todo in missing.items():
    split = setting.split(seed)
    _, retrained, seconds = pretrain(
      config,
      split.retain,
      out / "checkpoints" / f"retrain-seed{seed}",
      seed,
      f"retrain seed {seed}",
    )
    wall_seed = {**wall, "retraining": seconds}
    # The retrained reference, and the original model before unlearning for comparison.
    for name, state in ((REFERENCE, retrained), (ORIGINAL, original)):
      path = _run_path(out, name, None, seed)
      if not path.exists():
        E.save_run_json(
          path,
          {
            "config": config.name,
            "method": name,
            "optimizer": "sgd",
            "seed": seed,
            **evaluate(graphdef, state, split),
            "curve": [],
            "seconds": wall_seed,
          },
        )
    for method, optimizer in tqdm(todo, desc=f"seed {seed}"):
      run_one(config, method, optimizer, seed, graphdef, original, split, out, wall_seed)
  _check_recipe(out, config, record=True)
  return write_table(out, config)
