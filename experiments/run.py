"""Runs an unlearning table: methods x optimizers x seeds against retrained references.

  python -m experiments.run                       # the embedded CPU default
  python -m experiments.run --config fashion_mnist_small --out runs/fashion_mnist_small
  python -m experiments.run --config cifar10 --data-root /data/cifar10 --methods SalUn SFRon
  python -m experiments.run --config tofu_mini    # TOFU models, then the unlearning table
  python -m experiments.run --config tofu_mini --methods ME+GD --optimizers shared dual

See ``dualoptim_jax.tasks.classification.run`` and ``dualoptim_jax.tasks.llm.run`` for what a run
trains, writes and resumes.
"""

import argparse
import dataclasses
import pathlib

import jax

from dualoptim_jax.data.tofu import FORGET_SPLITS
from dualoptim_jax.tasks.classification import METHODS, OPTIMIZERS, run_table
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
  args = parser.parse_args(argv)

  config = CONFIGS[args.config]
  out = args.out or pathlib.Path("runs") / config.name
  # Runs of a table compile the same steps again (each run builds its own): XLA's persistent
  # cache under the run directory compiles each once, for later runs and restarts too.
  jax.config.update("jax_compilation_cache_dir", str(out / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  tofu_flags = ("forget", "task", "tokenizer", "model_path", "retain_model_path", "tasks")
  tofu_flags += ("forget_lr_ratios", "models_only")
  table_flags = ("seeds", "forget_lr")
  misplaced = [
    name
    for name in (table_flags if isinstance(config, TofuConfig) else tofu_flags)
    if getattr(args, name)
  ]
  if misplaced:
    flags = ", ".join("--" + name.replace("_", "-") for name in misplaced)
    parser.error(f"{flags}: not an option of the config {args.config}")
  if isinstance(config, TofuConfig):
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
          tuple(args.forget_lr_ratios) if args.forget_lr_ratios else config.forget_lr_ratios
        ),
        tasks=tuple(args.tasks) if args.tasks else None if args.task else config.tasks,
      )
      if config.unlearn is None or args.models_only:
        build_models(config, out, args.data_root, args.tokenizer)
        print((out / "scores.md").read_text())
      else:  # builds the models of each task too
        print(run_unlearning(config, out, args.data_root, args.tokenizer))
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
    table = run_table(config, out, args.data_root)
  except (FileNotFoundError, ValueError) as error:  # missing data, bad paths, damaged files
    parser.exit(1, f"{parser.prog}: error: {error}\n")
  print(table)
  print(f"\nResults written under {out}")


if __name__ == "__main__":
  main()
