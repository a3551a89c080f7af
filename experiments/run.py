"""Runs an unlearning table: methods x optimizers x seeds against retrained references.

  python -m experiments.run                       # the embedded CPU default
  python -m experiments.run --config fashion_mnist_small --out runs/fashion_mnist_small
  python -m experiments.run --config cifar10 --data-root /data/cifar10 --methods SalUn SFRon
  python -m experiments.run --config tofu_mini    # TOFU models, then the unlearning table
  python -m experiments.run --config tofu_mini --methods ME+GD --optimizers shared dual
  python -m experiments.run --config fashion_mnist_small --sweep sgd:forget_lr=0.002,0.006,0.018 \
      dual:forget_lr=1e-4,3e-4,1e-3 --out runs/fms_sweep     # the paper's per-method protocol
  python -m experiments.run --mesh data=4,fsdp=2 --zero1   # on 8 devices
  python -m experiments.run --coordinator host0:1234 --num-processes 2 --process-id 0  # host 0 of 2

See ``dualoptim_jax.tasks.classification.run`` and ``dualoptim_jax.tasks.llm.run`` for what a run
trains, writes and resumes.
"""

import argparse
import dataclasses
import pathlib

import jax

from dualoptim_jax.core import MeshPlan, distributed, parse_mesh
from dualoptim_jax.data.tofu import FORGET_SPLITS
from dualoptim_jax.tasks.classification import METHODS, OPTIMIZERS, run_table
from dualoptim_jax.tasks.classification.run import run_sweep
from dualoptim_jax.tasks.llm import unlearn as llm_unlearn
from dualoptim_jax.tasks.llm.experiment import run_unlearning
from dualoptim_jax.tasks.llm.run import TofuConfig, build_models
from experiments.configs import CONFIGS


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="default", choices=sorted(CONFIGS))
  parser.add_argument("--out", type=pathlib.Path, help="run directory (default runs/<config>)")
  parser.add_argument("--data-root", help="dataset directory (default: the dataset's own)")
  parser.add_argument(
    "--methods",
    nargs="+",
    help=f"methods to run: {', '.join(sorted(METHODS))} (with the config's hyper-parameters, "
    "else defaults); TOFU: FORGET+RETAIN loss pairs such as ME+GD",
  )
  parser.add_argument(
    "--optimizers",
    nargs="+",
    help=f"{', '.join(OPTIMIZERS)}; TOFU: {', '.join(llm_unlearn.OPTIMIZERS)}",
  )
  parser.add_argument("--seeds", nargs="+", type=int)
  parser.add_argument(
    "--forget-lr",
    nargs="+",
    default=[],
    metavar="OPTIMIZER=LR",
    help="override forget learning rates, e.g. dual=3e-4 sgd=0.02 (use a "
    "separate --out per setting: finished runs are found by name)",
  )
  parser.add_argument("--forget", choices=sorted(FORGET_SPLITS), help="TOFU split")
  parser.add_argument("--task", type=int, help="TOFU task of the split")
  parser.add_argument("--tokenizer", help="TOFU: a tokenizer.json (default: the shipped BPE)")
  parser.add_argument("--model-path", help="TOFU full scale: the target model's folder")
  parser.add_argument("--retain-model-path", help="TOFU full scale: the retain model's folder")
  parser.add_argument("--tasks", nargs="+", type=int, help="TOFU: the tasks to repeat over")
  parser.add_argument(
    "--forget-lr-ratios",
    nargs="+",
    type=float,
    help="TOFU: the forget lr / retain lr grid, searched on the first task",
  )
  parser.add_argument(
    "--models-only", action="store_true", help="TOFU: the target and retain models alone"
  )
  parser.add_argument(
    "--sweep",
    nargs="+",
    default=[],
    metavar="[OPTIMIZER:]forget_lr=V1,V2,...",
    help="grid the forget lr per method and optimizer on the selection seeds, then run every "
    "seed with each pair's best (lowest Avg. Gap); TOFU: sets the ratio grid (V / lr)",
  )
  parser.add_argument(
    "--selection-seeds", nargs="+", type=int, help="the sweep's seeds (default: the first seed)"
  )
  parser.add_argument(
    "--vmap",
    action="store_true",
    help="run the seeds and forget lrs of each method and optimizer as one vmapped program "
    "(pays on an accelerator; slower than the default loop on a CPU)",
  )
  parser.add_argument(
    "--mesh",
    metavar="data=N,fsdp=M",
    help="the device mesh (default: every device on data); batches split over all of it, params "
    "and optimizer states over fsdp",
  )
  parser.add_argument(
    "--zero1", action="store_true", help="split the optimizer states over data too (ZeRO-1)"
  )
  hosts = parser.add_argument_group(
    "several hosts (one process each, same command, a shared --out; process 0 writes results)"
  )
  hosts.add_argument(
    "--distributed", action="store_true", help="join the processes JAX detects (TPU, SLURM, MPI)"
  )
  hosts.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
  hosts.add_argument("--num-processes", type=int)
  hosts.add_argument("--process-id", type=int)
  args = parser.parse_args(argv)
  if args.distributed or args.coordinator or args.num_processes or args.process_id is not None:
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)

  config = CONFIGS[args.config]
  out = args.out or pathlib.Path("runs") / config.name
  # Runs of a table compile the same steps again (each run builds its own): XLA's persistent
  # cache under the run directory compiles each once, for later runs and restarts too.
  jax.config.update("jax_compilation_cache_dir", str(out / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  tofu_flags = ("forget", "task", "tokenizer", "model_path", "retain_model_path", "tasks")
  tofu_flags += ("forget_lr_ratios", "models_only")
  table_flags = ("seeds", "forget_lr", "selection_seeds", "vmap")
  misplaced = [
    name
    for name in (table_flags if isinstance(config, TofuConfig) else tofu_flags)
    if getattr(args, name)
  ]
  if misplaced:
    flags = ", ".join("--" + name.replace("_", "-") for name in misplaced)
    parser.error(f"{flags}: not an option of the config {args.config}")
  if args.sweep and (args.forget_lr or args.forget_lr_ratios):
    parser.error("--sweep sets the forget learning rates: leave out --forget-lr(-ratios)")
  if args.selection_seeds and not args.sweep:
    parser.error("--selection-seeds: the seeds of a --sweep")
  try:
    plan = _plan(args.mesh, args.zero1, args.vmap)
  except ValueError as error:
    parser.error(str(error))
  optimizers = tuple(args.optimizers or config.optimizers)
  try:
    grid = _parse_sweep(args.sweep, optimizers)
  except ValueError as error:
    parser.error(str(error))
  if isinstance(config, TofuConfig):
    if grid and config.unlearn is None:
      parser.error(f"--sweep: the config {args.config} has no unlearning recipe")
    try:
      config = dataclasses.replace(
        config,
        forget=args.forget or config.forget,
        task=config.task if args.task is None else args.task,
        target_path=args.model_path or config.target_path,
        retain_path=args.retain_model_path or config.retain_path,
        methods=tuple(args.methods or config.methods),
        optimizers=tuple(args.optimizers or config.optimizers),
        forget_lr_ratios=(
          {o: tuple(v / config.unlearn.lr for v in values) for o, values in grid.items()}
          if grid
          else tuple(args.forget_lr_ratios)
          if args.forget_lr_ratios
          else config.forget_lr_ratios
        ),
        tasks=tuple(args.tasks) if args.tasks else None if args.task else config.tasks,
      )
      if config.unlearn is None or args.models_only:
        build_models(config, out, args.data_root, args.tokenizer, plan=plan)
        print((out / "scores.md").read_text())
      else:  # builds the models of each task too
        print(run_unlearning(config, out, args.data_root, args.tokenizer, plan=plan))
    except (FileNotFoundError, ValueError) as error:
      parser.exit(1, f"{parser.prog}: error: {error}\n")
    print(f"Results written under {out}")
    return
  bad = [m for m in args.methods or () if m not in METHODS]
  bad += [o for o in args.optimizers or () if o not in OPTIMIZERS]
  if bad:
    parser.error(f"not a method or optimizer of {args.config}: {', '.join(bad)}")
  forget_lr = dict(config.forget_lr)
  for item in args.forget_lr:
    name, _, value = item.partition("=")
    if name not in OPTIMIZERS or not value:
      parser.error(f"--forget-lr takes OPTIMIZER=LR with OPTIMIZER in {OPTIMIZERS}, got {item!r}")
    forget_lr[name] = float(value)
  own = {m.name: m for m in config.methods}
  methods = config.methods
  if args.methods:
    methods = tuple(own.get(name, METHODS[name]) for name in args.methods)
  config = dataclasses.replace(
    config,
    methods=methods,
    optimizers=tuple(args.optimizers or config.optimizers),
    seeds=tuple(args.seeds or config.seeds),
    forget_lr=forget_lr,
  )
  try:
    if grid:
      table = run_sweep(
        config,
        out,
        grid,
        args.data_root,
        selection_seeds=args.selection_seeds,
        plan=plan,
        vmap=args.vmap,
      )
    else:
      table = run_table(config, out, args.data_root, plan=plan, vmap=args.vmap)
  except (FileNotFoundError, ValueError) as error:  # missing data, bad paths, damaged files
    parser.exit(1, f"{parser.prog}: error: {error}\n")
  print(table)
  print(f"\nResults written under {out}")


def _plan(mesh: str | None, zero1: bool, vmap: bool = False) -> MeshPlan | None:
  """The `MeshPlan` of ``--mesh`` (default: every device on data); None on a single device and
  with ``--vmap`` (stacked runs use one device)."""
  if vmap and (mesh or zero1):
    raise ValueError("--vmap runs the stacked runs on one device: leave out --mesh and --zero1.")
  sizes = parse_mesh(mesh) if mesh else {}
  if vmap or (not sizes and jax.device_count() == 1):
    if zero1:
      raise ValueError("--zero1 needs several devices.")
    return None
  return MeshPlan.create(sizes.get("data"), sizes.get("fsdp", 1), zero1=zero1)


def _parse_sweep(items: list[str], optimizers: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
  """``["forget_lr=1e-4,3e-4", "sgd:forget_lr=0.01"]`` -> the forget lrs of each optimizer (an
  item without an optimizer sets those that have none of their own)."""
  shared, own = None, {}
  for item in items:
    target, _, values = item.rpartition("=")
    optimizer, _, name = target.rpartition(":")
    try:
      parsed = tuple(float(v) for v in values.split(","))
    except ValueError:
      parsed = ()
    if name != "forget_lr" or not parsed or any(not v > 0 for v in parsed):
      raise ValueError(
        f"--sweep takes [OPTIMIZER:]forget_lr=V1,V2,... with positive values, got {item!r}"
      )
    if optimizer and optimizer not in optimizers:
      raise ValueError(f"--sweep: {optimizer!r} is not among the optimizers {optimizers}")
    if optimizer:
      own[optimizer] = parsed
    else:
      shared = parsed
  if not items:
    return {}
  missing = [o for o in optimizers if o not in own and shared is None]
  if missing:
    raise ValueError(f"--sweep gives no forget lrs for {', '.join(missing)}")
  return {o: own.get(o, shared) for o in optimizers}


if __name__ == "__main__":
  main()
