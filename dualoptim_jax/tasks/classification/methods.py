"""The classification unlearning methods, one class each, and `unlearn`, which runs one.

| method | forget step | retain step | mask | schedule |
| --- | --- | --- | --- | --- |
| FT | - | CE | - | every retain batch, each epoch |
| GA | -CE | - | - | every forget batch, each epoch |
| RL | CE on uniform random labels | CE | - | all forget batches, then all retain batches |
| SalUn | as RL | as RL | saliency, both steps | as RL |
| SCRUB | -KL(teacher, student) | CE + 0.5 KL | - | as RL |
| SFRon | -alpha_t * weighted CE | CE | Fisher, forget step | 1 forget step every 5 iterations |

A method is a frozen dataclass whose fields are its own hyper-parameters (``SFRon(iters=1500)``);
it owns its losses, its objective schedule, its optimizer recipe, its gradient masks, the labels
its forget batches get and the traced extra inputs of its losses.

Optimizers (reference section 2.3): ``sgd`` and ``adam`` keep ONE state for both objectives and
switch its learning rate per objective; ``dual`` gives each objective its own (AdamW forgets, SGD
retains). Unlike the reference, where ``--optim dual`` silently means SGD at the retain learning
rate for GA, here every step goes to its objective's optimizer: GA's forget steps run AdamW at the
forget learning rate (FT's retain steps run SGD at the retain learning rate, as in the reference).
"""

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import dualoptim_jax.optim as do
from dualoptim_jax.core import MeshPlan, TrainState, make_step, run_schedule
from dualoptim_jax.data import UnlearningSplit, cycle_batches, num_batches
from dualoptim_jax.tasks.classification import losses
from dualoptim_jax.tasks.classification.masks import fisher_mask, salun_mask

OPTIMIZERS = ("sgd", "adam", "dual")
_SHARED_OR_DUAL = {"sgd": do.shared_sgd, "adam": do.shared_adamw, "dual": do.dualoptim}


def _check_positive(owner: object, **values) -> None:
  for name, value in values.items():
    if isinstance(value, jax.core.Tracer):  # a learning rate traced by inject_hyperparams
      continue
    if not value > 0:
      raise ValueError(f"{type(owner).__name__}.{name} must be positive, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class UnlearnConfig:
  """The hyper-parameters every method shares.

  ``retain_lr`` is the reference's default. Its CIFAR-10 runs use ``batch_size`` 256, ``augment``
  (crop and flip) and a forget learning rate tuned per method.
  """

  epochs: int = 10
  batch_size: int = 128
  forget_lr: float = 1e-4
  retain_lr: float = 0.01
  augment: bool = False

  def __post_init__(self):
    _check_positive(
      self,
      epochs=self.epochs,
      batch_size=self.batch_size,
      forget_lr=self.forget_lr,
      retain_lr=self.retain_lr,
    )


@dataclasses.dataclass(frozen=True)
class Method:
  """An unlearning method; the defaults are those of an epoch-block method without a mask.

  Subclasses set ``losses`` (objective -> logits loss; an objective without a loss never runs) and
  override the hooks that differ.
  """

  losses: ClassVar[Mapping[str, Callable]] = {}

  @property
  def name(self) -> str:
    return type(self).__name__

  def schedule(self, split: UnlearningSplit, config: UnlearnConfig) -> do.AlternatingSchedule:
    """Each epoch: every forget batch, then every retain batch (of the objectives it has)."""
    sizes = {do.FORGET: len(split.forget), do.RETAIN: len(split.retain)}
    steps = {
      k: num_batches(n, config.batch_size) if k in self.losses else 0 for k, n in sizes.items()
    }
    return do.epoch_blocks(steps[do.FORGET], steps[do.RETAIN], config.epochs)

  def learning_rates(self, optimizer: str, config: UnlearnConfig) -> tuple[float, float]:
    """The (forget, retain) learning rates under ``optimizer``."""
    del optimizer
    return config.forget_lr, config.retain_lr

  def optimizer(
    self, name: str, config: UnlearnConfig, schedule: do.AlternatingSchedule
  ) -> optax.GradientTransformationExtraArgs:
    """The ``sgd`` / ``adam`` / ``dual`` optimizer (reference ``unlearn/impl.py``)."""
    del schedule
    return _SHARED_OR_DUAL[name](*self.learning_rates(name, config))

  def masks(
    self,
    graphdef: nnx.GraphDef,
    original: TrainState,
    split: UnlearningSplit,
    config: UnlearnConfig,
    seed: int,
  ) -> dict[str, Any]:
    """Objective -> 0/1 gradient mask like the params; a missing objective is not masked."""
    del graphdef, original, split, config, seed
    return {}

  def relabel(
    self, objective: str, labels: np.ndarray, rng: np.random.Generator, num_classes: int
  ) -> np.ndarray:
    """The labels a batch of ``objective`` trains on."""
    del objective, rng, num_classes
    return labels

  def extras(
    self, objective: str, step: int, schedule: do.AlternatingSchedule, original: TrainState
  ) -> dict[str, Any]:
    """The traced extra inputs of the loss at global step ``step`` (see `classifier_loss`)."""
    del objective, step, schedule, original
    return {}


@dataclasses.dataclass(frozen=True)
class FT(Method):
  """Fine-tuning on the retain set."""

  losses: ClassVar = {do.RETAIN: losses.cross_entropy}

  def learning_rates(self, optimizer, config):
    """The reference's FT trains at ``unlearn_lr`` (the forget lr) unless the optimizer is dual."""
    lr = config.retain_lr if optimizer == "dual" else config.forget_lr
    return config.forget_lr, lr


@dataclasses.dataclass(frozen=True)
class GA(Method):
  """Gradient ascent on the forget set."""

  losses: ClassVar = {do.FORGET: losses.negative_cross_entropy}


@dataclasses.dataclass(frozen=True)
class RL(Method):
  """Random labels: CE on the forget set relabelled uniformly at random, CE on the retain set."""

  losses: ClassVar = {do.FORGET: losses.cross_entropy, do.RETAIN: losses.cross_entropy}

  def relabel(self, objective, labels, rng, num_classes):
    """Fresh uniform labels for every forget batch."""
    if objective != do.FORGET:
      return labels
    return rng.integers(0, num_classes, len(labels)).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class SalUn(RL):
  """RL restricted to the most salient weights, in both steps.

  Attributes:
    ratio: the fraction of all weights the saliency mask keeps.
  """

  ratio: float = 0.5

  def __post_init__(self):
    if not 0 < self.ratio <= 1:
      raise ValueError(f"SalUn.ratio must lie in (0, 1], got {self.ratio!r}.")

  def masks(self, graphdef, original, split, config, seed):
    mask = salun_mask(
      graphdef,
      original,
      split.forget,
      split.retain,
      ratio=self.ratio,
      batch_size=config.batch_size,
      augment=config.augment,
      seed=seed,
    )
    return {do.FORGET: mask, do.RETAIN: mask}


@dataclasses.dataclass(frozen=True)
class SCRUB(Method):
  """Max step away from the original model (the teacher) on the forget set, min step towards it.

  Attributes:
    alpha: the weight of the KL term in the retain loss.
    gamma: the weight of the CE term in the retain loss.
  """

  losses: ClassVar = {do.FORGET: losses.scrub_forget, do.RETAIN: losses.scrub_retain}
  alpha: float = 0.5
  gamma: float = 1.0

  def extras(self, objective, step, schedule, original):
    teacher = {"teacher": (original.params, original.model_state)}
    if objective == do.RETAIN:
      return {**teacher, "gamma": self.gamma, "alpha": self.alpha}
    return teacher


@dataclasses.dataclass(frozen=True)
class SFRon(Method):
  r"""SFRon (reference ``sfron.py``): Fisher-masked, weighted gradient ascent every ``freq``
  iterations and a retain step every iteration, both on cosine learning rates.

  Iteration :math:`i` of :math:`I` runs a forget step when :math:`i \bmod` ``freq`` :math:`= 0`,
  then a retain step. The forget loss is weighted by
  :math:`\alpha_i = \alpha (1 + \cos(\pi i / I)) / 2`, and both learning rates follow the same
  cosine of the iteration. Forget gradients are clipped to global norm ``max_norm``; the shared
  optimizers (SGD 0.9 / 5e-4, AdamW 0.9 / 0.999 / 0.05) run at the retain lr for both objectives.

  Attributes:
    alpha: the forget loss weight at iteration 0.
    lambd: the exponent of the forget-sample weights (`losses.sfron_forget`).
    freq: iterations per forget step.
    iters: the iteration count; None means ``epochs`` x (retain batches per epoch), so that SFRon
      sees as much retain data as the epoch-based methods.
    max_norm: the global-norm clip of the forget gradients.
  """

  losses: ClassVar = {do.FORGET: losses.sfron_forget, do.RETAIN: losses.cross_entropy}
  alpha: float = 25.0
  lambd: float = 0.5
  freq: int = 5
  iters: int | None = None
  max_norm: float = 7.0

  def __post_init__(self):
    _check_positive(self, freq=self.freq, max_norm=self.max_norm)
    if self.iters is not None:
      _check_positive(self, iters=self.iters)

  def schedule(self, split, config):
    iters = self.iters
    if iters is None:
      iters = config.epochs * num_batches(len(split.retain), config.batch_size)
    return do.alternating(1, self.freq, iters + math.ceil(iters / self.freq))

  def iteration(self, count, objective: str | None):
    """The iteration of an optimizer step, from a (traced) step count.

    ``objective`` names whose count ``count`` is (its own steps); None means the count of a
    shared state (all steps).
    """
    if objective == do.FORGET:
      return count * self.freq
    if objective == do.RETAIN:
      return count
    cycle, rest = jnp.divmod(count, self.freq + 1)
    return cycle * self.freq + jnp.maximum(rest - 1, 0)

  def optimizer(self, name, config, schedule):
    total = schedule.steps_before(len(schedule), do.RETAIN)  # one retain step per iteration

    def cosine(base, objective):
      return lambda count: (
        base * (1 + jnp.cos(jnp.pi * self.iteration(count, objective) / total)) / 2
      )

    if name == "dual":
      tx = do.dualoptim(cosine(config.forget_lr, do.FORGET), cosine(config.retain_lr, do.RETAIN))
    else:
      factory, hyperparams = {
        "sgd": (do.sgd_l2, {"momentum": 0.9, "weight_decay": 5e-4}),
        "adam": (optax.adamw, {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.05}),
      }[name]
      tx = do.shared_transform(
        factory,
        {do.FORGET: cosine(config.retain_lr, None), do.RETAIN: cosine(config.retain_lr, None)},
        **hyperparams,
      )
    clip_forget = do.dual_transform(
      {do.FORGET: optax.clip_by_global_norm(self.max_norm), do.RETAIN: optax.identity()}
    )
    return optax.chain(clip_forget, tx)

  def masks(self, graphdef, original, split, config, seed):
    return {
      do.FORGET: fisher_mask(
        graphdef,
        original,
        split.forget,
        split.retain,
        batch_size=config.batch_size,
        augment=config.augment,
        seed=seed,
      )
    }

  def extras(self, objective, step, schedule, original):
    if objective != do.FORGET:
      return {}
    iteration = schedule.steps_before(step, do.RETAIN)
    total = schedule.steps_before(len(schedule), do.RETAIN)
    return {
      "lambd": self.lambd,
      "alpha": self.alpha * (1 + math.cos(math.pi * iteration / total)) / 2,
    }


METHODS: dict[str, Method] = {m.name: m for m in (FT(), GA(), RL(), SalUn(), SCRUB(), SFRon())}


def hyperparameters(method: Method, config: UnlearnConfig) -> dict[str, Any]:
  """The shared and the method's own hyper-parameters of a run, as one flat dict."""
  shared, own = dataclasses.asdict(config), dataclasses.asdict(method)
  if shared.keys() & own.keys():
    raise ValueError(
      f"{method.name} fields {sorted(shared.keys() & own.keys())} shadow shared ones."
    )
  return {**shared, **own}


def _start(method, graphdef, original, split, config, seed, tx):
  """A run's initial state (a copy of the original's weights), its masks and its batches."""
  copy = lambda tree: jax.tree.map(jnp.array, tree)  # noqa: E731
  state = TrainState(
    copy(original.params),
    copy(original.model_state),
    tx.init(original.params),
    jax.random.PRNGKey(seed),
  )
  masks = method.masks(graphdef, original, split, config, seed)
  rng = np.random.default_rng(seed)
  data = {do.FORGET: split.forget, do.RETAIN: split.retain}
  batches = {
    k: cycle_batches(data[k], config.batch_size, rng, augment=config.augment) for k in method.losses
  }

  def next_batch(objective):
    images, labels = next(batches[objective])
    return images, method.relabel(objective, labels, rng, split.forget.num_classes)

  return state, masks, next_batch


def _epoch_ends(schedule, config) -> dict[int, int]:
  """The global step that ends each epoch -> the epoch (1-indexed)."""
  return {round(len(schedule) * e / config.epochs) - 1: e for e in range(1, config.epochs + 1)}


def _step(method, tx, graphdef, plan=None, stacked=False):
  loss_fns = {k: losses.classifier_loss(graphdef, loss) for k, loss in method.losses.items()}
  return make_step(tx, loss_fns, plan, stacked=stacked)


def unlearn(
  method: Method,
  optimizer: str,
  graphdef: nnx.GraphDef,
  original: TrainState,
  split: UnlearningSplit,
  config: UnlearnConfig,
  seed: int = 0,
  on_epoch: Callable[[int, TrainState], None] | None = None,
  progress: Callable | None = None,
  plan: MeshPlan | None = None,
) -> TrainState:
  """Runs ``method`` with ``optimizer`` from the ``original`` model; returns the unlearned state.

  The original's params and model state are copied (the steps donate their state). Batches come
  from ``split`` (augmented if ``config.augment``); random labels, batch order and augmentation
  from ``np.random.default_rng(seed)``. ``on_epoch(epoch, state)`` is called after every epoch
  (SFRon: every ``epochs``-th of its iterations); ``progress`` wraps the schedule (e.g. ``tqdm``).
  With a ``plan``, the run is laid out on its device mesh.
  """
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {optimizer!r}; known optimizers: {OPTIMIZERS}.")
  schedule = method.schedule(split, config)
  tx = method.optimizer(optimizer, config, schedule)
  if plan is not None:  # the original (a teacher for SCRUB) and the masks placed once
    original = original._replace(
      params=plan.put(original.params), model_state=plan.put(original.model_state)
    )
  state, masks, next_batch = _start(method, graphdef, original, split, config, seed, tx)
  if plan is not None:
    masks = plan.put(masks)
  epoch_ends = _epoch_ends(schedule, config)

  def after_step(t, state):
    if on_epoch is not None and t in epoch_ends:
      on_epoch(epoch_ends[t], state)

  return run_schedule(
    state,
    schedule,
    _step(method, tx, graphdef, plan),
    next_batch,
    masks=masks,
    extras=lambda objective, t: method.extras(objective, t, schedule, original),
    after_step=after_step,
    progress=progress,
  )


def unlearn_stacked(
  method: Method,
  optimizer: str,
  graphdef: nnx.GraphDef,
  original: TrainState,
  points: Sequence[tuple[UnlearningSplit, UnlearnConfig, int]],
  on_epoch: Callable[[int, list[TrainState]], None] | None = None,
  progress: Callable | None = None,
) -> list[TrainState]:
  """`unlearn` of several ``(split, config, seed)`` points as one vmapped, jitted program.

  The points may differ in their split (seed) and forget learning rate, which
  ``optax.inject_hyperparams`` keeps in each point's optimizer state; everything else, the
  schedule included, must be the same. Point ``i`` equals ``unlearn(..., *points[i])`` up to float
  rounding. ``on_epoch(epoch, states)`` gets the point states. Faster than a loop where the device
  has room to spare (an accelerator running a small model), slower on a CPU.
  """
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {optimizer!r}; known optimizers: {OPTIMIZERS}.")
  if not points:
    raise ValueError("unlearn_stacked needs at least one point.")
  shared = {dataclasses.replace(config, forget_lr=1.0) for _, config, _ in points}
  schedules = [method.schedule(split, config) for split, config, _ in points]
  if len(shared) > 1 or any(s != schedules[0] for s in schedules):
    raise ValueError("Stacked points may differ in seed and forget_lr only, with one schedule.")
  schedule, config = schedules[0], points[0][1]

  def with_lr(forget_lr):
    return optax.inject_hyperparams(
      lambda forget_lr: method.optimizer(
        optimizer, dataclasses.replace(config, forget_lr=forget_lr), schedule
      )
    )(forget_lr=forget_lr)

  starts = [
    _start(method, graphdef, original, split, point_config, seed, with_lr(point_config.forget_lr))
    for split, point_config, seed in points
  ]
  stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)  # noqa: E731
  state = stack([s for s, _, _ in starts])
  masks = {k: stack([m[k] for _, m, _ in starts]) for k in starts[0][1]}
  epoch_ends = _epoch_ends(schedule, config)

  def unstack(state):
    return [jax.tree.map(lambda x, i=i: x[i], state) for i in range(len(points))]

  def after_step(t, state):
    if on_epoch is not None and t in epoch_ends:
      on_epoch(epoch_ends[t], unstack(state))

  state = run_schedule(
    state,
    schedule,
    _step(method, with_lr(config.forget_lr), graphdef, stacked=True),
    lambda objective: stack([next_batch(objective) for _, _, next_batch in starts]),
    masks=masks,
    extras=lambda objective, t: method.extras(objective, t, schedule, original),
    after_step=after_step,
    progress=progress,
  )
  return unstack(state)
