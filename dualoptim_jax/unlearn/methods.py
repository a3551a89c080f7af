"""The unlearning methods as a table, and the host loop that runs one with a shared or dual optimizer.

A method is a forget loss, a retain loss, an optional gradient mask and a step schedule:

| method | forget step | retain step | mask | schedule |
| --- | --- | --- | --- | --- |
| FT | - | CE | - | every retain batch, each epoch |
| GA | -CE | - | - | every forget batch, each epoch |
| RL | CE on uniform random labels | CE | - | all forget batches, then all retain batches |
| SalUn | as RL | as RL | saliency, both steps | as RL |
| SCRUB | -KL(teacher, student) | CE + 0.5 KL | - | as RL |
| SFRon | -alpha_t * weighted CE | CE | Fisher, forget step | 1 forget step every 5 iterations |

Optimizers (reference section 2.3): ``sgd`` and ``adam`` keep ONE state for both objectives and
switch its learning rate per objective; ``dual`` gives each objective its own (AdamW forgets, SGD
retains). Unlike the reference, where ``--optim dual`` silently means SGD at the retain learning
rate for GA, here every step goes to its objective's optimizer: GA's forget steps run AdamW at the
forget learning rate (FT's retain steps run SGD at the retain learning rate, as in the reference).
"""

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import dualoptim_jax.optim as do
from dualoptim_jax.data import UnlearningSplit, cycle_batches, num_batches
from dualoptim_jax.unlearn import losses
from dualoptim_jax.unlearn.masks import fisher_mask, salun_mask
from dualoptim_jax.unlearn.steps import LossFn, TrainState, make_step


@dataclasses.dataclass(frozen=True)
class Method:
  """One unlearning method: its losses, gradient mask and step loop."""

  forget_loss: LossFn | None
  retain_loss: LossFn | None
  mask: str | None = None  # "salun" (both steps) or "fisher" (forget step only)
  random_labels: bool = False  # forget batches get uniform random labels (RL, SalUn)
  teacher: bool = False  # the original model's logits reach the losses (SCRUB)
  loop: str = "epochs"  # "epochs" or "sfron"
  # Loss keyword -> UnlearnConfig field, per objective.
  forget_hparams: tuple[tuple[str, str], ...] = ()
  retain_hparams: tuple[tuple[str, str], ...] = ()


METHODS: dict[str, Method] = {
    "FT": Method(None, losses.cross_entropy),
    "GA": Method(losses.negative_cross_entropy, None),
    "RL": Method(losses.cross_entropy, losses.cross_entropy, random_labels=True),
    "SalUn": Method(losses.cross_entropy, losses.cross_entropy, mask="salun", random_labels=True),
    "SCRUB": Method(losses.scrub_forget, losses.scrub_retain, teacher=True,
                    retain_hparams=(("gamma", "scrub_gamma"), ("alpha", "scrub_alpha"))),
    "SFRon": Method(losses.sfron_forget, losses.cross_entropy, mask="fisher", loop="sfron",
                    forget_hparams=(("lambd", "sfron_lambda"),)),
}
OPTIMIZERS = ("sgd", "adam", "dual")


@dataclasses.dataclass(frozen=True)
class UnlearnConfig:
  """Hyper-parameters of an unlearning run.

  The method hyper-parameters (``salun_ratio``, ``scrub_*``, ``sfron_*``) and ``retain_lr`` are
  the reference's defaults. The reference's CIFAR-10 runs differ in ``batch_size`` (256),
  ``augment`` (on: crop and flip), ``sfron_iters`` (1500) and the forget learning rate, which it
  tunes per method. ``sfron_iters`` None means ``epochs`` x (retain batches per epoch), so that
  SFRon sees as much retain data as the epoch-based methods.
  """

  epochs: int = 10
  batch_size: int = 128
  forget_lr: float = 1e-4
  retain_lr: float = 0.01
  augment: bool = False
  salun_ratio: float = 0.5
  scrub_alpha: float = 0.5
  scrub_gamma: float = 1.0
  sfron_alpha: float = 25.0
  sfron_lambda: float = 0.5
  sfron_freq: int = 5
  sfron_iters: int | None = None
  sfron_max_norm: float = 7.0

  def __post_init__(self):
    positive = {"epochs": self.epochs, "batch_size": self.batch_size, "sfron_freq": self.sfron_freq,
                "forget_lr": self.forget_lr, "retain_lr": self.retain_lr,
                "sfron_max_norm": self.sfron_max_norm}
    if self.sfron_iters is not None:
      positive["sfron_iters"] = self.sfron_iters
    for name, value in positive.items():
      if not value > 0:
        raise ValueError(f"UnlearnConfig.{name} must be positive, got {value!r}.")
    if not 0 < self.salun_ratio <= 1:
      raise ValueError(f"UnlearnConfig.salun_ratio must lie in (0, 1], got {self.salun_ratio!r}.")


def sfron_iteration(count, period: int, objective: str | None):
  """The SFRon iteration of an optimizer step, from a step count (traced).

  Iteration i runs a forget step when ``i % period == 0``, then a retain step. ``objective`` names
  whose count ``count`` is (its own steps); None means the count of a shared state (all steps).
  """
  if objective == do.FORGET:
    return count * period
  if objective == do.RETAIN:
    return count
  cycle, rest = jnp.divmod(count, period + 1)
  return cycle * period + jnp.maximum(rest - 1, 0)


def make_optimizer(name: str, method: str, config: UnlearnConfig,
                   total_iters: int | None = None) -> optax.GradientTransformationExtraArgs:
  """The ``sgd`` / ``adam`` / ``dual`` optimizer of a method (reference ``unlearn/impl.py``).

  Shared optimizers run the forget steps at ``forget_lr`` and the retain steps at ``retain_lr``
  (RL, SalUn, SCRUB switch per phase), except FT, whose retain steps keep the forget learning rate
  (the reference's ``unlearn_lr``) because it never switches. SFRon (reference ``sfron.py``): both
  learning rates follow a cosine over its iterations (stepped every iteration), forget gradients
  are clipped to global norm ``sfron_max_norm``, and the shared optimizers (SGD 0.9 / 5e-4, AdamW
  0.9 / 0.999 / 0.05) run at ``retain_lr`` for both objectives.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}; known optimizers: {OPTIMIZERS}.")
  forget_lr, retain_lr = config.forget_lr, config.retain_lr
  if METHODS[method].loop != "sfron":
    if method == "FT" and name != "dual":
      retain_lr = forget_lr
    factory = {"sgd": do.shared_sgd, "adam": do.shared_adamw, "dual": do.dualoptim}[name]
    return factory(forget_lr, retain_lr)

  def cosine(base, objective):
    return lambda count: base * (1 + jnp.cos(
        jnp.pi * sfron_iteration(count, config.sfron_freq, objective) / total_iters)) / 2

  if name == "dual":
    tx = do.dualoptim(cosine(forget_lr, do.FORGET), cosine(retain_lr, do.RETAIN))
  else:
    factory, hyperparams = {
        "sgd": (do.sgd_l2, {"momentum": 0.9, "weight_decay": 5e-4}),
        "adam": (optax.adamw, {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.05}),
    }[name]
    tx = do.shared_transform(factory, {do.FORGET: cosine(retain_lr, None),
                                       do.RETAIN: cosine(retain_lr, None)}, **hyperparams)
  clip_forget = do.dual_transform({do.FORGET: optax.clip_by_global_norm(config.sfron_max_norm),
                                   do.RETAIN: optax.identity()})
  return optax.chain(clip_forget, tx)


def _schedule(method: Method, split: UnlearningSplit, config: UnlearnConfig):
  """The objective schedule and the SFRon iteration count (None for epoch loops)."""
  t_f = num_batches(len(split.forget), config.batch_size)
  t_r = num_batches(len(split.retain), config.batch_size)
  if method.loop == "sfron":
    iters = config.epochs * t_r if config.sfron_iters is None else config.sfron_iters
    total = iters + math.ceil(iters / config.sfron_freq)
    return do.alternating(1, config.sfron_freq, total), iters
  t_f, t_r = (t_f if method.forget_loss else 0), (t_r if method.retain_loss else 0)
  return do.epoch_blocks(t_f, t_r, config.epochs), None


def unlearn(
    method: str,
    optimizer: str,
    graphdef: nnx.GraphDef,
    original: TrainState,
    split: UnlearningSplit,
    config: UnlearnConfig,
    seed: int = 0,
    on_epoch: Callable[[int, TrainState], None] | None = None,
    progress: Callable | None = None,
) -> TrainState:
  """Runs ``method`` with ``optimizer`` from the ``original`` model; returns the unlearned state.

  The original's params and batch statistics are copied (the steps donate their state). Batches
  come from ``split`` (augmented if ``config.augment``); random labels, batch order and
  augmentation from ``np.random.default_rng(seed)``. ``on_epoch(epoch, state)`` is called after
  every epoch (SFRon: every ``epochs``-th of its iterations); ``progress`` wraps the step iterator
  (e.g. ``tqdm``).
  """
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; known methods: {sorted(METHODS)}.")
  spec = METHODS[method]
  schedule, iters = _schedule(spec, split, config)
  epoch_ends = {round(len(schedule) * e / config.epochs) - 1: e
                for e in range(1, config.epochs + 1)}
  tx = make_optimizer(optimizer, method, config, iters)
  copy = lambda tree: jax.tree.map(jnp.array, tree)  # noqa: E731
  state = TrainState(copy(original.params), copy(original.batch_stats),
                     tx.init(original.params))
  teacher = (original.params, original.batch_stats) if spec.teacher else None

  mask = None
  if spec.mask == "salun":
    mask = salun_mask(graphdef, original, split.forget, split.retain, ratio=config.salun_ratio,
                      batch_size=config.batch_size, augment=config.augment, seed=seed)
  elif spec.mask == "fisher":
    mask = fisher_mask(graphdef, original, split.forget, split.retain,
                       batch_size=config.batch_size, augment=config.augment, seed=seed)
  masks = {do.FORGET: mask, do.RETAIN: mask if spec.mask == "salun" else None}

  step_losses = {do.FORGET: spec.forget_loss, do.RETAIN: spec.retain_loss}
  hparams = {k: {name: getattr(config, field) for name, field in pairs}
             for k, pairs in ((do.FORGET, spec.forget_hparams), (do.RETAIN, spec.retain_hparams))}
  steps = {k: make_step(graphdef, tx, loss, objective=k)
           for k, loss in step_losses.items() if loss is not None}

  rng = np.random.default_rng(seed)
  data = {do.FORGET: split.forget, do.RETAIN: split.retain}
  batches = {k: cycle_batches(data[k], config.batch_size, rng, augment=config.augment)
             for k in steps}
  num_classes = split.forget.num_classes
  wrap = progress or (lambda it, **_: it)
  for t, objective in enumerate(wrap(schedule, total=len(schedule))):
    images, labels = next(batches[objective])
    extra = dict(hparams[objective])
    if objective == do.FORGET and spec.random_labels:
      labels = rng.integers(0, num_classes, len(labels)).astype(np.int32)
    if objective == do.FORGET and spec.loop == "sfron":
      iteration = schedule.steps_before(t, do.RETAIN)
      extra["alpha"] = config.sfron_alpha * (1 + math.cos(math.pi * iteration / iters)) / 2
    state, _ = steps[objective](state, images, labels, masks[objective], teacher, **extra)
    if on_epoch is not None and t in epoch_ends:
      on_epoch(epoch_ends[t], state)
  return state
