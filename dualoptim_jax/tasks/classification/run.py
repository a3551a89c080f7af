"""A classification unlearning table: methods x optimizers x seeds against retrained references.

For an `ExperimentConfig`, `run_table` (1) trains the original model on the setting's whole pool,
(2) retrains a reference model on each seed's retain set, (3) unlearns with every method x
optimizer x seed, and (4) writes under ``out``: ``runs/*.json`` (metrics and the wall time of
each phase per run), ``table.md``, ``table.csv`` and ``curves.png`` (metrics over unlearning
epochs, seed bands). Models are Orbax checkpoints under ``checkpoints/`` (resumed if interrupted,
reused by every run); finished runs are found and skipped, and a seed whose runs are all finished
needs no model at all, so a long table can be built over several sittings.
"""

import csv
import dataclasses
import pathlib
import time
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from dualoptim_jax import eval as E
from dualoptim_jax.core import MeshPlan, TrainState, checkpoint
from dualoptim_jax.data import ArrayDataset, UnlearningSplit, load_setting
from dualoptim_jax.models import ResNet18
from dualoptim_jax.tasks.classification.methods import (
  METHODS,
  OPTIMIZERS,
  Method,
  UnlearnConfig,
  hyperparameters,
  unlearn,
  unlearn_stacked,
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
    original_schedule: the original model's learning-rate schedule, ``"cosine"`` (as the
      retrained reference's) or ``"reference"`` (the reference code's 20-epoch-period cosine,
      `pretrain.reference_epoch_schedule`).
    unlearn: the hyper-parameters every method shares; ``forget_lr`` is set per optimizer.
    forget_lr: optimizer name -> forget learning rate; a key ``"METHOD/optimizer"`` (e.g.
      ``"SalUn/dual"``) sets one method's, as the paper tunes it per method and optimizer.
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
  original_schedule: str = "cosine"
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
    for key in self.forget_lr:
      method, _, optimizer = key.rpartition("/")
      if optimizer not in OPTIMIZERS or (method and method not in METHODS):
        raise ValueError(
          f"Config {self.name!r}: forget_lr key {key!r} is not OPTIMIZER or METHOD/OPTIMIZER "
          f"(methods {sorted(METHODS)}, optimizers {list(OPTIMIZERS)})."
        )
    missing = [
      f"{m.name}/{o}"
      for m in self.methods
      for o in self.optimizers
      if self.forget_lr_of(m.name, o) is None
    ]
    if missing:
      raise ValueError(f"Config {self.name!r} has no forget learning rate for {missing}.")

  def forget_lr_of(self, method: str, optimizer: str) -> float | None:
    return self.forget_lr.get(f"{method}/{optimizer}", self.forget_lr.get(optimizer))

  def unlearn_config(self, method: str, optimizer: str) -> UnlearnConfig:
    return dataclasses.replace(self.unlearn, forget_lr=self.forget_lr_of(method, optimizer))


def _new_model(config: ExperimentConfig, data: ArrayDataset, seed: int) -> nnx.Module:
  return ResNet18(
    data.num_classes,
    width=config.width,
    mean=data.mean,
    std=data.std,
    rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")),
  )


def pretrain(
  config: ExperimentConfig,
  dataset: ArrayDataset,
  directory: pathlib.Path,
  seed: int,
  desc: str,
  plan: MeshPlan | None = None,
  schedule: str = "cosine",
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
    plan=plan,
    schedule=schedule,
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


@dataclasses.dataclass(frozen=True)
class _Run:
  """A missing run of a table."""

  config: ExperimentConfig
  out: pathlib.Path
  method: Method
  optimizer: str
  seed: int

  @property
  def unlearn_config(self) -> UnlearnConfig:
    return self.config.unlearn_config(self.method.name, self.optimizer)


def _write_run(path: pathlib.Path, run: dict) -> None:
  """Writes the run's JSON and, beside it as ``<name>.npz``, its per-sample ``scores``."""
  E.save_arrays(path.with_suffix(".npz"), run.pop("scores"))
  E.save_run_json(path, run)


def _save_run(run: _Run, metrics: dict, curve: list, seconds: dict) -> None:
  _write_run(
    _run_path(run.out, run.method.name, run.optimizer, run.seed),
    {
      "config": run.config.name,
      "method": run.method.name,
      "optimizer": run.optimizer,
      "seed": run.seed,
      **metrics,
      "curve": curve,
      "hyperparameters": hyperparameters(run.method, run.unlearn_config),
      "seconds": seconds,
    },
  )


def run_one(
  run: _Run,
  graphdef: nnx.GraphDef,
  original: TrainState,
  split: UnlearningSplit,
  wall: dict,
  plan: MeshPlan | None = None,
) -> None:
  """One unlearning run; writes its JSON (metrics, per-epoch curve if tracked, phase times)."""
  curve, curve_seconds = [], [0.0]

  def on_epoch(epoch, state):
    jax.block_until_ready(state)  # queued train steps count as unlearning, not evaluation
    start = time.perf_counter()
    curve.append(evaluate(graphdef, state, split))
    curve_seconds[0] += time.perf_counter() - start

  method, optimizer, seed = run.method, run.optimizer, run.seed
  start = time.perf_counter()
  state = unlearn(
    method,
    optimizer,
    graphdef,
    original,
    split,
    run.unlearn_config,
    seed=seed,
    on_epoch=on_epoch if method.name in run.config.track_epochs else None,
    progress=lambda schedule: tqdm(
      schedule, leave=False, desc=f"{method.name}/{optimizer}/seed {seed}"
    ),
    plan=plan,
  )
  jax.block_until_ready(state)
  unlearn_seconds = time.perf_counter() - start - curve_seconds[0]
  start = time.perf_counter()
  metrics = evaluate(graphdef, state, split, attacks=True)
  seconds = {"unlearning": unlearn_seconds, "curve_evaluation": curve_seconds[0]}
  _save_run(run, metrics, curve, {**wall, **seconds, "evaluation": time.perf_counter() - start})


def run_stacked(
  runs: list[_Run],
  graphdef: nnx.GraphDef,
  original: TrainState,
  splits: dict[int, UnlearningSplit],
  walls: dict[int, dict],
) -> None:
  """Runs of one method and optimizer that differ in seed and forget lr, as one vmapped program
  (`unlearn_stacked`); each writes its JSON, with the stack's wall time and size."""
  curves, curve_seconds = [[] for _ in runs], [0.0]

  def on_epoch(epoch, states):
    jax.block_until_ready(states)
    start = time.perf_counter()
    for curve, state, run in zip(curves, states, runs, strict=True):
      curve.append(evaluate(graphdef, state, splits[run.seed]))
    curve_seconds[0] += time.perf_counter() - start

  method, optimizer = runs[0].method, runs[0].optimizer
  start = time.perf_counter()
  states = unlearn_stacked(
    method,
    optimizer,
    graphdef,
    original,
    [(splits[r.seed], r.unlearn_config, r.seed) for r in runs],
    on_epoch=on_epoch if method.name in runs[0].config.track_epochs else None,
    progress=lambda schedule: tqdm(
      schedule, leave=False, desc=f"{method.name}/{optimizer}: {len(runs)} stacked runs"
    ),
  )
  jax.block_until_ready(states)
  stack_seconds = time.perf_counter() - start - curve_seconds[0]
  for run, state, curve in zip(runs, states, curves, strict=True):
    start = time.perf_counter()
    metrics = evaluate(graphdef, state, splits[run.seed], attacks=True)
    seconds = {
      "unlearning_stacked": stack_seconds,
      "stack_size": len(runs),
      "curve_evaluation_stacked": curve_seconds[0],
      "evaluation": time.perf_counter() - start,
    }
    _save_run(run, metrics, curve, {**walls[run.seed], **seconds})


def _labelled(groups: dict) -> list[tuple[str, list]]:
  """``(row label, runs)`` in the groups' (table) order."""
  return [
    (method if method == ORIGINAL else f"{method} ({optimizer})", group)
    for (method, optimizer), group in groups.items()
  ]


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
  groups = dict(sorted(E.group_runs(runs).items(), key=lambda g: order.index(g[0])))
  reference = groups.pop((REFERENCE, "sgd"), None)
  if not reference:
    raise FileNotFoundError(f"No retrained-reference runs under {out / 'runs'}.")
  originals = {r["seed"]: r for r in groups.get((ORIGINAL, "sgd"), [])}
  rows, csv_rows, curves = {REFERENCE: E.summarize(reference, reference, METRICS)}, {}, {}
  rt_seeds, notes = sorted(r["seed"] for r in reference), []
  for label, group in _labelled(groups):
    method, optimizer = group[0]["method"], group[0]["optimizer"]
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
  rates = [
    f"{method} ({optimizer}) {config.forget_lr_of(method, optimizer):g}"
    for method, optimizer in csv_rows
    if method != ORIGINAL
  ]
  notes.append("Forget learning rates: " + ", ".join(rates) + ".")
  table = E.markdown_table(rows, METRICS) + "".join(f"\n{note}\n" for note in notes)
  attacked = {label: g for label, g in _labelled(groups) if all("mia" in r for r in g)}
  if attacked and all("mia" in r for r in reference):
    table += (
      "\nMembership inference, forget vs test (each score's AUC with its gap to RT's over all its "
      "seeds; the loss "
      "attack's PrivLeak to RT, negative when the forget set looks more like members than under "
      "retraining; `roc.png`: its ROC):\n\n"
      + E.mia.attack_table(
        {REFERENCE: [r["mia"]["attacks"] for r in reference]}
        | {label: [r["mia"]["attacks"] for r in g] for label, g in attacked.items()},
        [r["mia"]["attacks"] for r in reference],
      )
    )
    E.plot_roc(
      {
        label: [r["mia"]["roc_loss"] for r in g]
        for label, g in {REFERENCE: reference, **attacked}.items()
      },
      E.mia.ROC_FPRS,
      out / "roc.png",
      title=f"{config.name}: loss attack, forget vs test, seeds {rt_seeds}",
      reference=REFERENCE,
    )
  E.write_text(out / "table.md", f"# {config.name}: seeds {rt_seeds}\n\n{table}\n")
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
  recipe = {name: getattr(config, name) for name in _RECIPE}
  if config.original_schedule != "cosine":  # out directories of the default predate the field
    recipe["original_schedule"] = config.original_schedule
  return recipe


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


def run_table(
  config: ExperimentConfig,
  out: pathlib.Path,
  data_root=None,
  *,
  models: pathlib.Path | None = None,
  plan: MeshPlan | None = None,
  vmap: bool = False,
) -> str:
  """Runs every missing run of ``config`` under ``out``, then writes and returns its table.

  ``out/experiment.json`` records the setting, the model width and the pretraining recipe, and
  ``runs/*.json`` each run's hyper-parameters: an out directory of another recipe is refused.
  Models are checkpointed under ``models`` (default ``out/checkpoints``). With a ``plan``, training
  and unlearning run on its device mesh; with ``vmap``, the runs of each method and optimizer
  run stacked (`run_stacked`).
  """
  return run_tables([(config, out)], data_root, models=models, plan=plan, vmap=vmap)[0]


def run_tables(
  tables: Sequence[tuple[ExperimentConfig, pathlib.Path]],
  data_root=None,
  *,
  models: pathlib.Path | None = None,
  plan: MeshPlan | None = None,
  vmap: bool = False,
) -> list[str]:
  """`run_table` of several ``(config, out)`` tables of one recipe (a sweep's points), which
  share the trained models and, with ``vmap``, the stacked programs."""
  if plan is not None and vmap:
    raise ValueError("Stacked (vmapped) runs run on one device: use a mesh or vmap, not both.")
  if len({tuple(_recipe(config).items()) for config, _ in tables}) > 1:
    raise ValueError("Tables that share models need one setting, model and pretraining.")
  models = models or tables[0][1] / "checkpoints"
  todo, baselines = [], {}  # baselines: (out, seed) -> config
  for config, out in tables:
    _check_recipe(out, config, record=False)
    for seed in config.seeds:
      for method in config.methods:
        for optimizer in config.optimizers:
          run = _Run(config, out, method, optimizer, seed)
          path = _run_path(out, method.name, optimizer, seed)
          if path.exists():
            _check_hyperparameters(path, hyperparameters(method, run.unlearn_config))
          else:
            todo.append(run)
      if not all(_run_path(out, n, None, seed).exists() for n in (REFERENCE, ORIGINAL)):
        baselines[(out, seed)] = config

  seeds = sorted({r.seed for r in todo} | {seed for _, seed in baselines})
  if seeds:
    config = tables[0][0]
    setting = load_setting(config.setting, data_root)
    for _, out in tables:
      (out / "runs").mkdir(parents=True, exist_ok=True)
    graphdef, original, seconds = pretrain(
      config, setting.pool, models / "original", 0, "original", plan, config.original_schedule
    )
    wall = {"pretraining": seconds}
  splits, walls = {}, {}
  for seed in seeds:
    split = setting.split(seed)
    _, retrained, seconds = pretrain(
      config, split.retain, models / f"retrain-seed{seed}", seed, f"retrain seed {seed}", plan
    )
    walls[seed] = {**wall, "retraining": seconds}
    # The retrained reference, and the original model before unlearning for comparison.
    for (out, _), table_config in ((k, c) for k, c in baselines.items() if k[1] == seed):
      for name, state in ((REFERENCE, retrained), (ORIGINAL, original)):
        path = _run_path(out, name, None, seed)
        if not path.exists():
          _write_run(
            path,
            {
              "config": table_config.name,
              "method": name,
              "optimizer": "sgd",
              "seed": seed,
              **evaluate(graphdef, state, split, attacks=True),
              "curve": [],
              "seconds": walls[seed],
            },
          )
    if vmap:
      splits[seed] = split
      continue
    for run in tqdm([r for r in todo if r.seed == seed], desc=f"seed {seed}"):
      run_one(run, graphdef, original, split, walls[seed], plan)
  if vmap:  # one program per method, optimizer and schedule
    groups = {}
    for run in todo:
      schedule = run.method.schedule(splits[run.seed], run.unlearn_config)
      shared = dataclasses.replace(run.unlearn_config, forget_lr=1.0)
      groups.setdefault((run.method, run.optimizer, shared, schedule), []).append(run)
    for group in tqdm(list(groups.values()), desc="stacked runs"):
      run_stacked(group, graphdef, original, splits, walls)
  tables_md = []
  for config, out in tables:
    _check_recipe(out, config, record=True)
    tables_md.append(write_table(out, config))
  return tables_md


def read_avg_gaps(out: pathlib.Path) -> dict[tuple[str, str], float]:
  """(method, optimizer) -> Avg. Gap, from a written ``table.csv``."""
  with (out / "table.csv").open() as fp:
    return {(r["method"], r["optimizer"]): float(r["avg_gap"]) for r in csv.DictReader(fp)}


def run_sweep(
  config: ExperimentConfig,
  out: pathlib.Path,
  grid: Mapping[str, Sequence[float]],
  data_root=None,
  *,
  selection_seeds: Sequence[int] | None = None,
  plan: MeshPlan | None = None,
  vmap: bool = False,
) -> str:
  """The paper's protocol: grid the forget lr per method and optimizer on the selection seeds,
  then run every seed with each pair's value of lowest Avg. Gap.

  ``grid`` maps each optimizer to its forget learning rates. Each value is a table of the
  selection seeds (default: the first seed) under ``out/sweep/forget_lr=<value>/``;
  ``out/sweep/summary.md`` lists every pair's Avg. Gap per value and its choice, flagged when it
  sits at an edge of the grid (widen the grid there); the final table, at ``out``, runs every
  seed with the chosen values (the selection seeds' runs are copied, not run again). All share the
  models under ``out/checkpoints``.
  """
  missing = [o for o in config.optimizers if not grid.get(o)]
  if missing:
    raise ValueError(f"The sweep has no forget learning rates for {missing}.")
  selection = tuple(selection_seeds or config.seeds[:1])
  values = sorted({v for o in config.optimizers for v in grid[o]})
  points = {}
  for value in values:
    optimizers = tuple(o for o in config.optimizers if value in grid[o])
    point = dataclasses.replace(
      config, optimizers=optimizers, seeds=selection, forget_lr=dict.fromkeys(optimizers, value)
    )
    points[value] = (point, out / "sweep" / f"forget_lr={value:g}")
  models = out / "checkpoints"
  run_tables(list(points.values()), data_root, models=models, plan=plan, vmap=vmap)
  gaps = {value: read_avg_gaps(point_out) for value, (_, point_out) in points.items()}
  chosen, lines = {}, []
  for method in config.methods:
    for optimizer in config.optimizers:
      tried = {v: gaps[v][(method.name, optimizer)] for v in sorted(grid[optimizer])}
      best = min(tried, key=tried.get)
      chosen[f"{method.name}/{optimizer}"] = best
      if len(tried) > 1 and len(set(tried.values())) == 1:
        flag = " (all equal: the forget lr is not used)"  # e.g. SFRon's shared optimizers
      else:
        flag = " (edge)" if len(tried) > 1 and best in (min(tried), max(tried)) else ""
      cells = ", ".join(f"{v:g}: {gap:.2f}" for v, gap in tried.items())
      lines.append(f"| {method.name} | {optimizer} | {cells} | {best:g}{flag} |")
  E.write_text(
    out / "sweep" / "summary.md",
    f"# {config.name}: forget lr grid, Avg. Gap on seeds {list(selection)}\n\n"
    "| Method | Optimizer | forget lr: Avg. Gap | chosen |\n|---|---|---|---|\n"
    + "\n".join(lines)
    + "\n\n(edge): the chosen value is the grid's smallest or largest; widen the grid there.\n",
  )
  final = dataclasses.replace(config, forget_lr={**config.forget_lr, **chosen})
  for key, value in chosen.items():
    method, optimizer = key.split("/")
    for seed in selection:
      source = _run_path(points[value][1], method, optimizer, seed)
      target = _run_path(out, method, optimizer, seed)
      if not target.exists():
        if source.with_suffix(".npz").is_file():  # its per-sample scores first
          with np.load(source.with_suffix(".npz")) as scores:
            E.save_arrays(target.with_suffix(".npz"), dict(scores))
        E.write_text(target, source.read_text())
  return run_table(final, out, data_root, models=models, plan=plan, vmap=vmap)
