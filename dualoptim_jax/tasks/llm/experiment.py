"""The TOFU unlearning table: every method x optimizer, its forget learning rate gridded on a
selection task, then repeated over the other tasks, against the target and retain models.

For a `TofuConfig` with ``unlearn`` set, `run_unlearning`:

1. builds (or reloads) the target and retain models of every task (`run.build_models`);
2. on the selection task (the first of ``config.repeats``) runs each method and optimizer at every
   ratio of ``forget_lr_ratios``, extends the grid by one step of the 1-3-10 ladder while the
   best ratio sits at an edge (up to ``widen`` times per edge), and picks the ratio with the
   highest Avg = (MU + UFE) / 2 (an optimizer that takes another's ratio, `ratio_source`, runs
   at that one); on the other tasks runs that ratio only;
3. scores every run after each epoch on the first ``curve_size`` questions of each evaluation set
   (the curve; point 0 is the target model) and at the end on the full sets;
4. writes ``unlearn/runs/<method>-<optimizer>-r<ratio>-task<k>.json`` per run (scores, curve,
   hyper-parameters, phase wall times, the target model's fingerprint), then ``unlearn/table.md``
   (mean and population std over tasks, the grid, reference rows), ``unlearn/table.json`` and a
   ``curves_<method>.png`` per method.

A finished run (its JSON) is skipped on restart; an interrupted one resumes from its last epoch
(Orbax checkpoints under ``unlearn/unfinished/``, removed once the run is written).
"""

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import pathlib
import shutil
import time

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from dualoptim_jax.core import MeshPlan, checkpoint
from dualoptim_jax.core.distributed import main_process_writes
from dualoptim_jax.data.tofu import encode_qa
from dualoptim_jax.eval import aggregate as E
from dualoptim_jax.eval.plots import plot_curves
from dualoptim_jax.tasks.llm.evaluate import tofu_scores
from dualoptim_jax.tasks.llm.run import ROLES, TofuConfig, _Pipeline, build_models
from dualoptim_jax.tasks.llm.unlearn import Stream, hyperparameters, steps_per_epoch, unlearn_lm

COLUMNS = ("MU", "UFE", "FQ", "Avg")
CURVE_METRICS = (
  E.Metric("forget ROUGE", "lower"),
  E.Metric("retain ROUGE", "higher"),
  E.Metric("MU", "higher"),
  E.Metric("UFE", "higher"),
  E.Metric("Avg", "higher"),
)


def fingerprint(params) -> str:
  """A short SHA-256 of the parameters' bytes: which target model a run started from."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    digest.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
  return digest.hexdigest()[:16]


def run_name(method: str, optimizer: str, ratio: float, task: int) -> str:
  return f"{method}-{optimizer}-r{ratio:g}-task{task}"


def _point(sets: dict, retain_model_forget: dict) -> dict:
  """The scores logged at one point: the aggregates plus each set's ROUGE."""
  scores = tofu_scores(sets, retain_model_forget)
  return {**scores, **{f"{name} ROUGE": s["ROUGE"] for name, s in sets.items()}}


def _references(config: TofuConfig, out, target: str, data_root, tokenizer_path, progress, plan):
  """The `run.build_models` report of the config's split, kept in
  ``unlearn/references/<split>.json`` for the target of fingerprint ``target``, so that the
  retain model is trained and both are evaluated once (the file can be kept, e.g. committed,
  without the checkpoints)."""
  path = pathlib.Path(out) / "unlearn" / "references" / f"{config.forget}_task{config.task}.json"
  unlearning = (
    "name",
    "unlearn",
    "methods",
    "optimizers",
    "forget_lr_ratios",
    "tasks",
    "curve_size",
    "widen",
  )
  models = {k: v for k, v in dataclasses.asdict(config).items() if k not in unlearning}
  key = json.loads(json.dumps({"target": target, **models}))
  if path.is_file():
    saved = E.load_run_json(path)
    if saved["key"] == key:
      return saved["report"]
  report = build_models(config, out, data_root, tokenizer_path, progress, write=False, plan=plan)
  E.save_run_json(path, {"key": key, "report": report})
  return report


class _Task:
  """One task's data, target model and references, shared by its runs."""

  def __init__(self, config: TofuConfig, out, data_root, tokenizer_path, progress, plan):
    self.pipeline = pipeline = _Pipeline(config, out, data_root, tokenizer_path, plan)
    self.model = pipeline.train("target", progress)[0]
    self.fingerprint = fingerprint(nnx.state(self.model, nnx.Param))
    self.report = _references(
      config, out, self.fingerprint, data_root, tokenizer_path, progress, plan
    )
    split, seed = pipeline.split, config.unlearn.seed
    rng = np.random.default_rng([seed, config.task])  # each question's fixed IDK answer

    def stream(rows):
      def encode(question, answer):
        return encode_qa(pipeline.encode, pipeline.template, question, answer, pipeline.eos)

      idk = rng.integers(len(split.idk), size=len(rows))
      return Stream(
        [encode(r["question"], r["answer"]) for r in rows],
        [encode(r["question"], split.idk[i]) for r, i in zip(rows, idk, strict=True)],
      )

    self.forget, self.retain = stream(split.forget), stream(split.retain)
    self.retain_forget = self.report["results"]["retain"]["sets"]["forget"]
    self.curve_eval = dataclasses.replace(config.eval, size=config.curve_size)
    self.curve_reference = {"truth_ratios": self.retain_forget["truth_ratios"][: config.curve_size]}
    cache = pathlib.Path(out) / "evals" / f"curve_target_{pipeline.split_name}.json"
    key = {
      "eval": dataclasses.asdict(self.curve_eval),
      "eval_sets": list(config.eval_sets),
      "target": self.fingerprint,
      "retain_model_forget": self.curve_reference["truth_ratios"],
    }
    key = json.loads(json.dumps(key))
    found = E.load_run_json(cache) if cache.is_file() else None
    if found is None or found["key"] != key:
      found = {"key": key, "point": self.curve_point(self.model)}
      E.save_run_json(cache, found)
    self.start_point = found["point"]

  def curve_point(self, model) -> dict:
    return _point(self.pipeline.evaluate(model, self.curve_eval), self.curve_reference)


def _expected(config: TofuConfig, task: _Task, method, optimizer, ratio) -> dict:
  return {
    **hyperparameters(
      config.unlearn,
      method,
      optimizer,
      ratio,
      len(task.forget.examples),
      len(task.retain.examples),
    ),
    "eval": dataclasses.asdict(config.eval),
    "curve_size": config.curve_size,
  }


def _finished(path: pathlib.Path, expected: dict, target: str) -> dict | None:
  """The run saved at ``path``, if any; one of other settings or another target is refused."""
  if not path.exists():
    return None
  run = E.load_run_json(path)
  if run["hyperparameters"] != json.loads(json.dumps(expected)) or run["target"] != target:
    raise ValueError(
      f"{path} was run with other hyper-parameters or from another target model; use another "
      "--out or move it away."
    )
  return run


def run_one(config: TofuConfig, task: _Task, method, optimizer, ratio, path: pathlib.Path):
  """One unlearning run: trains, logs its curve, evaluates, writes ``path``."""
  work = path.parent.parent / "unfinished" / path.stem
  per_epoch = steps_per_epoch(config.unlearn, len(task.forget.examples), optimizer)

  def on_epoch(epoch, graphdef, state):
    jax.block_until_ready(state)
    begin = time.perf_counter()
    point = task.curve_point(nnx.merge(graphdef, state.params, state.model_state))
    point |= {"epoch": epoch, "step": epoch * per_epoch}
    point["seconds"] = time.perf_counter() - begin
    E.save_run_json(work / f"curve_{epoch}.json", point)

  graphdef, state = unlearn_lm(
    task.model,
    task.forget,
    task.retain,
    config.unlearn,
    method,
    optimizer,
    forget_lr_ratio=ratio,
    pad_id=task.pipeline.eos,
    checkpoint_dir=work / "checkpoints",
    run_key={"target": task.fingerprint},
    on_epoch=on_epoch,
    desc=path.stem,
    plan=task.pipeline.plan,
  )
  begin = time.perf_counter()
  sets = task.pipeline.evaluate(nnx.merge(graphdef, state.params, state.model_state), config.eval)
  evaluation = time.perf_counter() - begin
  curve = [E.load_run_json(work / f"curve_{e}.json") for e in range(1, config.unlearn.epochs + 1)]
  E.save_run_json(
    path,
    {
      "config": config.name,
      "method": method,
      "optimizer": optimizer,
      "forget_lr_ratio": ratio,
      "lr": config.unlearn.lr,
      "task": config.task,
      "split": task.pipeline.split_name,
      "target": task.fingerprint,
      "steps": config.unlearn.epochs * per_epoch,
      **tofu_scores(sets, task.retain_forget),
      "sets": sets,
      "curve": [{**task.start_point, "epoch": 0, "step": 0}, *curve],
      "hyperparameters": _expected(config, task, method, optimizer, ratio),
      "seconds": {
        "unlearning": checkpoint.read_metadata(work / "checkpoints")["total_seconds"],
        "curve_evaluation": sum(p["seconds"] for p in curve),
        "evaluation": evaluation,
      },
    },
  )
  main_process_writes(shutil.rmtree)(work)


def best_ratio(runs: list[dict]) -> float:
  """The forget learning-rate ratio of the run with the highest Avg (ties: the smaller ratio; a
  NaN Avg ranks last)."""

  def rank(run):
    return (-np.inf if np.isnan(run["Avg"]) else run["Avg"], -run["forget_lr_ratio"])

  return max(runs, key=rank)["forget_lr_ratio"]


def run_unlearning(
  config: TofuConfig,
  out,
  data_root=None,
  tokenizer_path=None,
  progress: bool = True,
  plan: MeshPlan | None = None,
) -> str:
  """Runs every missing run of ``config`` under ``out/unlearn``, rewriting its table after each
  new run (so an unfinished table shows what is done), and returns the table (see the module
  docstring). With a ``plan``, models train and unlearn on its device mesh."""
  if config.unlearn is None:
    raise ValueError(f"{config.name} has no unlearning recipe (TofuConfig.unlearn).")
  out = pathlib.Path(out)
  runs_dir = out / "unlearn" / "runs"
  selection = config.repeats[0]
  chosen, references = {}, {}

  def on_new():  # an unfinished table shows what is done
    write_table(config, out, chosen, references)

  for k in config.repeats:
    task_config = dataclasses.replace(config, task=k)
    task = _Task(task_config, out, data_root, tokenizer_path, progress, plan)
    references[k] = {role: task.report["results"][role]["scores"] for role in ROLES}

    pairs = list(itertools.product(config.methods, config.optimizers))
    for method, optimizer in tqdm(pairs, desc=f"task {k}", disable=not progress):
      run = functools.partial(_run_or_load, task_config, task, method, optimizer, runs_dir, on_new)
      if k != selection:
        run(chosen[method, optimizer])
        continue
      if (source := config.ratio_source(optimizer)) is not None:
        chosen[method, optimizer] = chosen[method, source]
        run(chosen[method, optimizer])
        continue
      grid = {r: run(r) for r in config.ratios(optimizer)}
      extended = {True: 0, False: 0}  # upwards, downwards
      while len(grid) > 1 and (best := best_ratio(list(grid.values()))) in (min(grid), max(grid)):
        up = best == max(grid)
        if extended[up] == config.widen:
          break
        extended[up] += 1
        ratio = widened(best, up)
        grid[ratio] = run(ratio)
      chosen[method, optimizer] = best_ratio(list(grid.values()))
  return write_table(config, out, chosen, references)


def _run_or_load(task_config, task, method, optimizer, runs_dir, on_new, ratio) -> dict:
  """The finished run at ``ratio`` of ``task_config.task``; if missing, it runs first and
  ``on_new()`` is called."""
  path = runs_dir / f"{run_name(method, optimizer, ratio, task_config.task)}.json"
  found = _finished(path, _expected(task_config, task, method, optimizer, ratio), task.fingerprint)
  if found is None:
    run_one(task_config, task, method, optimizer, ratio, path)
    on_new()
  return found or E.load_run_json(path)


def widened(ratio: float, up: bool) -> float:
  """The next value past ``ratio`` on the ladder ..., 0.1, 0.3, 1, 3, 10, ... (upwards if
  ``up``)."""
  exponent = math.floor(math.log10(ratio))
  ladder = [float(f"{c * 10.0**e:.3g}") for e in range(exponent - 1, exponent + 3) for c in (1, 3)]
  if up:
    return min(x for x in ladder if x > ratio * (1 + 1e-9))
  return max(x for x in ladder if x < ratio * (1 - 1e-9))


def _stats(values) -> dict[str, float]:
  return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _cell(values, digits: str = ".3f") -> str:
  s = _stats(values)
  return f"{s['mean']:{digits}}" + ("" if len(values) == 1 else f" ± {s['std']:{digits}}")


def write_table(config: TofuConfig, out: pathlib.Path, chosen: dict, references: dict) -> str:
  """Writes ``unlearn/table.md``, ``table.json`` and the curve plots of the finished runs of the
  tasks in ``references``; returns the Markdown."""
  root = out / "unlearn"
  runs = {
    (r["method"], r["optimizer"], r["forget_lr_ratio"], r["task"]): r
    for r in E.load_runs(root / "runs")
    if r["config"] == config.name
  }
  done = {task for *_, task in runs}  # the reference rows cover the tasks begun
  tasks = [k for k in config.repeats if k in references and k in done]
  fq = ".2g"
  header = "| method | optimizer | forget lr | tasks | MU ↑ | UFE ↑ | FQ ↑ | Avg ↑ | min/run |"
  lines = [
    f"# {config.name}: {config.forget}, tasks {tasks} (mean ± population std over tasks)\n",
    header,
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for role in ROLES:
    values = [references[k][role] for k in tasks]
    cells = [_cell([v[c] for v in values], fq if c == "FQ" else ".3f") for c in COLUMNS]
    lines.append(f"| {role} model | - | - | {len(tasks)} | " + " | ".join(cells) + " | - |")
  summary, curves = [], {}
  for (method, optimizer), ratio in chosen.items():
    group = [
      runs[method, optimizer, ratio, k] for k in tasks if (method, optimizer, ratio, k) in runs
    ]
    minutes = np.mean([sum(r["seconds"].values()) / 60 for r in group])
    cells = [_cell([r[c] for r in group], fq if c == "FQ" else ".3f") for c in COLUMNS]
    # Joint has one learning rate; its ratio weighs the forget loss.
    lr = f"w x {ratio:g}" if optimizer == "joint" else f"{ratio * config.unlearn.lr:.3g}"
    lines.append(
      f"| {method} | {optimizer} | {lr} | {len(group)} | "
      + " | ".join(cells)
      + f" | {minutes:.1f} |"
    )
    summary.append(
      {
        "method": method,
        "optimizer": optimizer,
        "forget_lr_ratio": ratio,
        "tasks": [r["task"] for r in group],
        **{c: _stats([r[c] for r in group]) for c in COLUMNS},
      }
    )
    curves.setdefault(method, {})[optimizer] = np.array(
      [[[p[m.name] for m in CURVE_METRICS] for p in r["curve"]] for r in group]
    )
  selection = config.repeats[0]
  lines += [
    "",
    f"## Forget learning-rate grid (task {selection}; retain lr {config.unlearn.lr:g}; the "
    "highest Avg is chosen, * marks it; 'edge' flags a winner at the grid's edge)\n",
    "| method | optimizer | forget lr / retain lr: Avg (MU, UFE) |",
    "|---|---|---|",
  ]
  for method, optimizer in itertools.product(config.methods, config.optimizers):
    ran = {r for m, o, r, k in runs if (m, o, k) == (method, optimizer, selection)}
    ratio, ratios = chosen.get((method, optimizer)), sorted(ran | set(config.ratios(optimizer)))
    cells = []
    for r in ratios:
      run = runs.get((method, optimizer, r, selection))
      mark = "*" if r == ratio else ""
      score = "-" if run is None else f"{run['Avg']:.3f}{mark} ({run['MU']:.2f}, {run['UFE']:.2f})"
      cells.append(f"{r:g}: {score}")
    source = config.ratio_source(optimizer)
    edge = " edge" if len(ratios) > 1 and ratio in (ratios[0], ratios[-1]) and not source else ""
    taken = f" ({source}'s ratio, not gridded)" if source else ""
    lines.append(f"| {method} | {optimizer}{edge}{taken} | " + "; ".join(cells) + " |")
  table = "\n".join(lines) + "\n"
  E.write_text(root / "table.md", table)
  E.save_run_json(
    root / "table.json",
    {"config": config.name, "tasks": tasks, "references": references, "rows": summary},
  )
  for method, by_optimizer in curves.items():
    plot_curves(
      by_optimizer,
      root / f"curves_{method}.png",
      CURVE_METRICS,
      title=f"{config.name} {method}: scores after each unlearning epoch (first "
      f"{config.curve_size} questions per set; bands: ±1 std over tasks {tasks})",
    )
  return table
