"""The TOFU target and retain models of a setting, and their scores.

For a `TofuConfig`, `build_models` (1) fine-tunes the target model on the setting's whole pool and
(2) the retain model on the split's retain set only (TOFU's stand-in for retraining), or, at full
scale, loads both from Hugging Face folders (``models/hf.py``), (3) checks
that each has memorised its training QA (`evaluate.passes_gate`), (4) evaluates both on the
forget and retain evaluation sets, and (5) writes under ``out``: ``scores.json`` (every score,
gate, wall time and step count) and ``scores.md``. The models are Orbax checkpoints under
``checkpoints/`` (resumed if interrupted, reused by later calls: the target once per setting, the
retain model once per split) and each evaluation is cached under ``evals/``.
"""

import dataclasses
import json
import pathlib
import time

import jax
from flax import nnx

from dualoptim_jax import eval as E
from dualoptim_jax.core import MeshPlan, checkpoint
from dualoptim_jax.data.settings import load_tofu_setting
from dualoptim_jax.data.tofu import TEMPLATES, encode_qa, num_bucket_batches
from dualoptim_jax.data.tokenizer import eos_id, load_tokenizer
from dualoptim_jax.models.decoder import Decoder, DecoderConfig
from dualoptim_jax.models.hf import load_hf_decoder
from dualoptim_jax.tasks.llm.evaluate import (
  SCORES,
  EvalConfig,
  evaluate_set,
  memorisation,
  passes_gate,
  tofu_scores,
)
from dualoptim_jax.tasks.llm.finetune import FinetuneConfig, finetune_lm
from dualoptim_jax.tasks.llm.unlearn import OPTIMIZERS, UnlearnConfig, parse_method

EVAL_SETS = ("forget", "retain", "real_authors", "world_facts")
ROLES = ("target", "retain")


@dataclasses.dataclass(frozen=True)
class TofuConfig:
  """A TOFU experiment: setting, split, model and the recipes.

  At CPU scale the two models are fine-tuned from scratch; with ``pretrained`` they are loaded
  from ``target_path`` and ``retain_path`` (Hugging Face folders, e.g. ``tofu_ft_phi-1.5`` and a
  retain90 model), whose ``tokenizer.json`` is used.

  Attributes:
    name: the config's name.
    setting: a name from ``data.settings.TOFU_SETTINGS``.
    forget, task: the split (``forget10`` task 1 is TOFU's standard one).
    dim, layers, heads, max_len: the decoder (its vocabulary is the tokenizer's).
    template: a name from ``data.tofu.TEMPLATES``.
    finetune: the recipe of the target and the retain model.
    eval: the evaluation settings.
    eval_sets: the evaluation sets, among ``forget``, ``retain``, ``real_authors`` and
      ``world_facts`` (the last two are meaningful for pretrained models only).
    pretrained, target_path, retain_path, dtype: loading the models (compute ``dtype``).
    unlearn: the unlearning recipe, or None for the two models alone.
    methods: ``"FORGET+RETAIN"`` loss pairs (``tasks.llm.losses``).
    optimizers: among ``tasks.llm.unlearn.OPTIMIZERS``.
    forget_lr_ratios: the forget learning rates (over ``unlearn.lr``) gridded on the selection
      task, the first of ``tasks``, for every optimizer or per optimizer (a dict); the other tasks
      run each method and optimizer's best ratio. A dict entry may instead name another
      optimizer with a grid: when that one runs too (listed before), its chosen ratio is taken,
      not gridded again (e.g. 8-bit DualOptim+ at 32-bit DualOptim+'s, so that the two differ in
      precision only); when it does not, its grid is gridded.
    tasks: the repeats (tasks of the split); None: ``(task,)``.
    curve_size: the questions per evaluation set scored after every unlearning epoch.
    widen: how many times a grid is extended past each edge while its best ratio sits there
      (one step of the 1-3-10 ladder each time).
  """

  name: str
  setting: str = "tofu"
  forget: str = "forget10"
  task: int = 1
  dim: int = 256
  layers: int = 4
  heads: int = 4
  max_len: int = 256
  template: str = "qa"
  finetune: FinetuneConfig = FinetuneConfig()
  eval: EvalConfig = EvalConfig()
  eval_sets: tuple[str, ...] = ("forget", "retain")
  pretrained: bool = False
  target_path: str | None = None
  retain_path: str | None = None
  dtype: str = "float32"
  unlearn: UnlearnConfig | None = None
  methods: tuple[str, ...] = ("ME+GD", "IDK+AP", "GA+GD", "NPO+GD")
  optimizers: tuple[str, ...] = ("shared", "dual", "plus", "plus8")
  forget_lr_ratios: tuple[float, ...] | dict[str, tuple[float, ...] | str] = (1.0,)
  tasks: tuple[int, ...] | None = None
  curve_size: int = 100
  widen: int = 2

  def __post_init__(self):
    unknown = set(self.eval_sets) - set(EVAL_SETS)
    if unknown or "forget" not in self.eval_sets or len(self.eval_sets) < 2:
      raise ValueError(f"eval_sets must include 'forget' and another set of {EVAL_SETS}.")
    for method in self.methods:
      parse_method(method)
    if set(self.optimizers) - set(OPTIMIZERS):
      raise ValueError(f"Unknown optimizers in {self.optimizers}; known: {', '.join(OPTIMIZERS)}.")
    for i, optimizer in enumerate(self.optimizers):
      source = self._named(optimizer)
      grid = self.forget_lr_ratios
      if source is not None and (
        not isinstance(grid.get(source), tuple | list) or source in self.optimizers[i + 1 :]
      ):
        raise ValueError(
          f"{optimizer} takes the forget lr ratio chosen for {source!r}, which must be an "
          f"optimizer with a grid of its own, listed before {optimizer} if it runs too."
        )
      if self.ratio_source(optimizer) is not None:
        continue
      ratios = self.ratios(optimizer)
      if not ratios or min(ratios) <= 0:
        raise ValueError(f"{optimizer}'s forget_lr_ratios must be positive, got {ratios}.")
    if self.tasks is not None and not self.tasks:
      raise ValueError("tasks must name at least one task.")
    if self.widen < 0:
      raise ValueError(f"widen must be non-negative, got {self.widen}.")
    if self.curve_size < 1:
      raise ValueError(f"curve_size must be positive, got {self.curve_size}.")

  def _named(self, optimizer: str) -> str | None:
    """The optimizer that ``optimizer``'s dict entry names, if it names one."""
    grid = self.forget_lr_ratios
    entry = grid.get(optimizer) if isinstance(grid, dict) else None
    return entry if isinstance(entry, str) else None

  def ratio_source(self, optimizer: str) -> str | None:
    """The optimizer (of this run) whose chosen ratio ``optimizer`` takes, or None."""
    source = self._named(optimizer)
    return source if source in self.optimizers else None

  def ratios(self, optimizer: str) -> tuple[float, ...]:
    """The forget learning-rate ratios gridded for ``optimizer`` (none if it takes another's)."""
    if self.ratio_source(optimizer) is not None:
      return ()
    grid = self.forget_lr_ratios
    if not isinstance(grid, dict):
      return tuple(grid)
    return tuple(grid.get(self._named(optimizer) or optimizer, ()))

  @property
  def repeats(self) -> tuple[int, ...]:
    return (self.task,) if self.tasks is None else self.tasks


def _model_config(config: TofuConfig, vocab_size: int) -> DecoderConfig:
  return DecoderConfig(
    vocab_size=vocab_size,
    dim=config.dim,
    layers=config.layers,
    heads=config.heads,
    max_len=config.max_len,
  )


class _Pipeline:
  """The tokenizer, split and model config of a `TofuConfig`, shared by its two models."""

  def __init__(
    self,
    config: TofuConfig,
    out,
    data_root=None,
    tokenizer_path=None,
    plan: MeshPlan | None = None,
  ):
    if config.pretrained and not (config.target_path and config.retain_path):
      raise ValueError(
        f"{config.name} loads its models: give the target and the retain model folders "
        "(--model-path, --retain-model-path)."
      )
    self.config, self.out, self.plan = config, pathlib.Path(out), plan
    if tokenizer_path is None and config.pretrained:
      tokenizer_path = pathlib.Path(config.target_path) / "tokenizer.json"
    self.tokenizer = load_tokenizer(tokenizer_path)
    self.eos = eos_id(self.tokenizer)
    self.template = TEMPLATES[config.template]
    self.split = load_tofu_setting(config.setting, config.forget, config.task, data_root)
    # The target learns the whole pool, in one order whatever the split (forget10 task 1's).
    canonical = load_tofu_setting(config.setting, "forget10", 1, data_root)
    self.pool = canonical.forget + canonical.retain
    self.model_config = _model_config(config, self.tokenizer.get_vocab_size())
    self.split_name = f"{config.forget}_task{config.task}"

  def encode(self, text):
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def evaluate(self, model, eval_config: EvalConfig) -> dict:
    """`evaluate_set` of each of the config's evaluation sets, by name."""
    split = self.split
    return {
      name: evaluate_set(
        model,
        self.encode,
        self.tokenizer.decode,
        self.template,
        getattr(split, f"{name}_eval" if name in ("forget", "retain") else name),
        eval_config,
        self.eos,
        forget=name == "forget",
        relative=name in ("real_authors", "world_facts"),
      )
      for name in self.config.eval_sets
    }

  def rows(self, role: str) -> list[dict]:
    if role not in ROLES:
      raise ValueError(f"Unknown model {role!r}; the models are {', '.join(ROLES)}.")
    return self.pool if role == "target" else self.split.retain

  def directory(self, role: str) -> pathlib.Path:
    name = "target" if role == "target" else f"retain_{self.split_name}"
    return self.out / "checkpoints" / name

  def train(self, role: str, progress: bool = True):
    """Fine-tunes (or reloads, or loads) one model: ``(model, examples, checkpoint metadata)``."""
    examples = [
      encode_qa(self.encode, self.template, r["question"], r["answer"], self.eos)
      for r in self.rows(role)
    ]
    if self.config.pretrained:
      path = self.config.target_path if role == "target" else self.config.retain_path
      model = load_hf_decoder(path, dtype=self.config.dtype, max_len=self.config.max_len)
      return model, examples, {"epoch": 0, "loss": None, "total_seconds": None, "path": path}
    gated = [self.split.retain] + ([self.split.forget] if role == "target" else [])

    def memorised(model):  # the memorisation gate on every gated set of training QA
      return all(
        passes_gate(
          memorisation(model, self.encode, self.template, rows, self.config.eval, self.eos)
        )
        for rows in gated
      )

    graphdef, state = finetune_lm(
      Decoder(self.model_config, rngs=nnx.Rngs(self.config.finetune.seed)),
      examples,
      self.config.finetune,
      pad_id=self.eos,
      checkpoint_dir=self.directory(role),
      until=memorised,
      progress=progress,
      desc=f"{self.config.name} {role} model",
      plan=self.plan,
    )
    model = nnx.merge(graphdef, state.params, state.model_state)
    return model, examples, checkpoint.read_metadata(self.directory(role))


def train_model(
  config: TofuConfig, role: str, out, data_root=None, tokenizer_path=None, plan=None
) -> None:
  """Fine-tunes one model (``"target"`` or ``"retain"``) into ``out/checkpoints`` alone, e.g. in
  a process of its own; `build_models` then finds it finished."""
  _Pipeline(config, out, data_root, tokenizer_path, plan).train(role)


def build_models(
  config: TofuConfig,
  out,
  data_root=None,
  tokenizer_path=None,
  progress: bool = True,
  write: bool = True,
  plan: MeshPlan | None = None,
) -> dict:
  """Trains (or reloads) the target and retain models, evaluates them and (``write``) writes the
  scores.

  Returns the ``scores.json`` dict: per model (``target``, ``retain``) its fine-tune wall time and
  steps, its memorisation on the forget and retain training QA, the gate, the per-set scores and
  ``MU``, ``UFE``, ``Avg`` and ``FQ`` (against the retain model). With a ``plan``, fine-tuning
  runs on its device mesh.
  """
  pipeline = _Pipeline(config, out, data_root, tokenizer_path, plan)
  out, split, template, eos = pipeline.out, pipeline.split, pipeline.template, pipeline.eos
  results = {}
  for role in ROLES:
    model, examples, saved = pipeline.train(role, progress)
    cache = out / "evals" / f"{role}_{pipeline.split_name}.json"
    key = {  # what the evaluation depends on
      "epoch": saved["epoch"],
      "model": saved.get("path"),
      "hyperparameters": saved.get("hyperparameters"),
      "eval": dataclasses.asdict(config.eval),
      "eval_sets": list(config.eval_sets),
      "template": config.template,
      "dtype": config.dtype,
    }
    found = json.loads(cache.read_text()) if cache.is_file() else None
    if found is None or found.get("key") != json.loads(json.dumps(key)):
      begin = time.perf_counter()
      found = {
        "key": key,
        "memorisation": {
          name: memorisation(model, pipeline.encode, template, data, config.eval, eos)
          for name, data in (("forget", split.forget), ("retain", split.retain))
        },
        "sets": pipeline.evaluate(model, config.eval),
      }
      found["eval_seconds"] = time.perf_counter() - begin
      E.write_text(cache, json.dumps(found))
    steps = saved["epoch"] * num_bucket_batches(
      [len(ids) for ids, _ in examples], config.finetune.batch_size, config.finetune.buckets
    )
    results[role] = {
      "train_examples": len(examples),
      "epochs": saved["epoch"],
      "steps": steps,
      "train_seconds": saved.get("total_seconds"),
      "final_loss": saved["loss"],
      "eval_seconds": found["eval_seconds"],
      "memorisation": found["memorisation"],
      "sets": found["sets"],
    }
  for role, result in results.items():
    gate = result["memorisation"]
    result["gate"] = passes_gate(gate["retain"]) and (
      role != "target" or passes_gate(gate["forget"])
    )
    result["scores"] = tofu_scores(result["sets"], results["retain"]["sets"]["forget"])
  report = {
    "config": config.name,
    "setting": config.setting,
    "split": pipeline.split_name,
    "model": dataclasses.asdict(model.config),
    "params": int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))),
    "results": results,
  }
  if write:
    E.write_text(out / "scores.json", json.dumps(report, indent=1))
    E.write_text(out / "scores.md", scores_table(report))
  return report


def scores_table(report: dict) -> str:
  """A markdown table of the models' memorisation, per-set scores, aggregates and cost."""
  results = report["results"]
  names = list(next(iter(results.values()))["sets"])
  columns = [f"{s} {name}" for name in names for s in SCORES]
  header = ["model", "gate", "exact F/R", "prob F/R", *columns, "MU", "UFE", "FQ"]
  header += ["train min", "s/step"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for role, r in results.items():
    m, seconds = r["memorisation"], r["train_seconds"]
    cells = [
      role,
      "pass" if r["gate"] else "FAIL",
      f"{m['forget']['exact']:.3f}/{m['retain']['exact']:.3f}",
      f"{m['forget']['probability']:.3f}/{m['retain']['probability']:.3f}",
      *(f"{r['sets'][name][s]:.3f}" for name in names for s in SCORES),
      *(f"{r['scores'][s]:.3g}" for s in ("MU", "UFE", "FQ")),
      "-" if seconds is None else f"{seconds / 60:.1f}",
      "-" if seconds is None or not r["steps"] else f"{seconds / r['steps']:.3f}",
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
