r"""Unlearning a decoder LM: a forget loss and a retain loss, alternating or joint, with one shared
AdamW state or DualOptim's separate states.

Schedules (reference): with :math:`n_f` forget batches per pass over the forget set, an
alternating run has ``forget_steps`` forget then ``retain_steps`` retain optimizer steps per cycle
on the global step, :math:`(1 + r/f)\,n_f` steps per epoch; a joint run takes one step per paired
(forget, retain) batch on :math:`w_f L_f + w_r L_r`, :math:`n_f` steps per epoch. The learning rate
warms up linearly over one epoch from 0 and then decays linearly to 0, evaluated at the 0-indexed
global step (so the first step, a forget step, has learning rate 0), and is shared by both
objectives (the forget steps scaled by ``forget_lr_ratio``). Gradients are clipped to global norm
``max_grad_norm`` and weight decay skips biases and norm scales (arrays of rank < 2).

Optimizers (``OPTIMIZERS``): ``shared`` (one ``optax.adamw`` state, alternating), ``joint`` (one
AdamW state, summed loss), ``dual`` (`optim.dualoptim_llm`), ``plus`` and ``plus8``
(`optim.dualoptim_plus` with 32- and 8-bit states). The forget and retain streams each reshuffle
per pass (``np.random.default_rng([seed, stream, pass])``) and restart when exhausted.
"""

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dualoptim_jax.core import MeshPlan, TrainState, init_state, make_step, train_epochs
from dualoptim_jax.data.tofu import bucket_batches
from dualoptim_jax.optim import (
  FORGET,
  RETAIN,
  accumulate_per_objective,
  alternating,
  dualoptim_llm,
  dualoptim_plus,
  shared_adamw_llm,
)
from dualoptim_jax.tasks.llm.losses import (
  FORGET_LOSSES,
  RETAIN_LOSSES,
  forget_loss,
  retain_loss,
  sequence_nll,
)

OPTIMIZERS = ("shared", "joint", "dual", "plus", "plus8")
QASequence = tuple[np.ndarray, np.ndarray]  # token ids and labels (`data.tofu.encode_qa`)


@dataclasses.dataclass(frozen=True)
class UnlearnConfig:
  """The unlearning recipe (defaults: the reference code's TOFU settings).

  ``lr`` is the retain learning rate; a run's forget learning rate is ``forget_lr_ratio * lr``.
  ``batch_size`` sequences make one optimizer step (each stream's, for joint), in
  ``micro_batches`` accumulated micro-batches. ``b1``/``b2`` serve AdamW, DualOptim and
  DualOptim+'s deltas, ``base_b1``/``base_b2`` DualOptim+'s shared base.
  """

  lr: float = 1e-5
  batch_size: int = 40
  micro_batches: int = 1
  epochs: int = 5
  forget_steps: int = 1
  retain_steps: int = 5
  forget_coeff: float = 1.0
  retain_coeff: float = 1.0
  beta: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  base_b1: float = 0.9
  base_b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.01
  max_grad_norm: float = 1.0
  buckets: tuple[int, ...] = (64, 80, 96, 128)
  seed: int = 0

  def __post_init__(self):
    if self.epochs < 1 or self.lr <= 0 or self.forget_steps < 1 or self.retain_steps < 1:
      raise ValueError(f"epochs, lr, forget_steps and retain_steps must be positive in {self}.")
    if self.micro_batches < 1 or self.batch_size % self.micro_batches:
      raise ValueError(
        f"batch_size {self.batch_size} must split into {self.micro_batches} micro-batches."
      )


def parse_method(method: str) -> tuple[str, str]:
  """``"ME+GD"`` -> ``("ME", "GD")``: the forget and the retain loss."""
  forget, _, retain = method.partition("+")
  if forget not in FORGET_LOSSES or retain not in RETAIN_LOSSES:
    raise ValueError(
      f"Unknown method {method!r}: give FORGET+RETAIN with a forget loss of "
      f"{', '.join(FORGET_LOSSES)} and a retain loss of {', '.join(RETAIN_LOSSES)}."
    )
  return forget, retain


def _check_optimizer(optimizer: str) -> None:
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}.")


def steps_per_epoch(config: UnlearnConfig, num_forget: int, optimizer: str) -> int:
  """Optimizer steps per epoch: :math:`(1 + r/f)\\lceil |F| / B \\rceil` alternating, and
  :math:`\\lceil |F| / B \\rceil` joint (reference ``forget.py``)."""
  _check_optimizer(optimizer)
  forget_batches = -(-num_forget // config.batch_size)
  if optimizer == "joint":
    return forget_batches
  cycle = config.forget_steps + config.retain_steps
  return cycle * forget_batches // config.forget_steps


def lr_schedule(lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  r"""Hugging Face's ``get_linear_schedule_with_warmup`` of the 0-indexed step :math:`k`:
  :math:`\eta k / w` while :math:`k < w`, then :math:`\eta \max(0, (K - k) / (K - w))`."""

  def schedule(count):
    count = jnp.asarray(count, jnp.float32)
    warmup = count / max(1, warmup_steps)
    decay = jnp.maximum(0.0, (total_steps - count) / max(1, total_steps - warmup_steps))
    return lr * jnp.where(count < warmup_steps, warmup, decay)

  return schedule


def unlearn_tx(
  config: UnlearnConfig, optimizer: str, forget_lr_ratio: float, total_steps: int, warmup: int
) -> optax.GradientTransformation:
  """The optimizer of a run (micro-batch accumulation included)."""
  _check_optimizer(optimizer)
  schedule = lr_schedule(config.lr, warmup, total_steps)
  common = {
    "eps": config.eps,
    "weight_decay": config.weight_decay,
    "mask": lambda params: jax.tree.map(lambda p: p.ndim > 1, params),
    "max_grad_norm": config.max_grad_norm,
  }
  betas = {"b1": config.b1, "b2": config.b2}
  if optimizer == "joint":
    tx = optax.chain(
      optax.clip_by_global_norm(config.max_grad_norm),
      optax.adamw(
        schedule, **betas, eps=config.eps, weight_decay=config.weight_decay, mask=common["mask"]
      ),
    )
    return tx if config.micro_batches == 1 else optax.MultiSteps(tx, config.micro_batches)
  if optimizer == "shared":
    tx = shared_adamw_llm(schedule, forget_lr_ratio=forget_lr_ratio, **betas, **common)
  elif optimizer == "dual":
    tx = dualoptim_llm(schedule, forget_lr_ratio, **betas, **common)
  else:
    tx = dualoptim_plus(
      schedule,
      forget_lr_ratio,
      **betas,
      base_b1=config.base_b1,
      base_b2=config.base_b2,
      **common,
      state_bits=8 if optimizer == "plus8" else 32,
    )
  return tx if config.micro_batches == 1 else accumulate_per_objective(tx, config.micro_batches)


def hyperparameters(
  config: UnlearnConfig,
  method: str,
  optimizer: str,
  forget_lr_ratio: float,
  num_forget: int,
  num_retain: int,
) -> dict:
  """The JSON dict that identifies a run (a resumed run must match it)."""
  return {
    **dataclasses.asdict(config),
    "buckets": list(config.buckets),
    "method": method,
    "optimizer": optimizer,
    "forget_lr_ratio": forget_lr_ratio,
    "num_forget": num_forget,
    "num_retain": num_retain,
  }


@dataclasses.dataclass(frozen=True)
class Stream:
  """One data stream: its QA sequences, the same questions with an IDK answer, and (NPO, DPO) the
  frozen reference's summed NLLs of both, which `unlearn_lm` fills in on its own copy."""

  examples: Sequence[QASequence]
  idk: Sequence[QASequence]
  ref_nll: np.ndarray | None = None
  ref_idk_nll: np.ndarray | None = None

  def __post_init__(self):
    if not self.examples or len(self.idk) != len(self.examples):
      raise ValueError("A stream needs examples and one IDK sequence per example.")


@nnx.jit
def _summed_nll(model, input_ids, labels):
  return sequence_nll(model(input_ids)[0], labels)


def summed_nll(model, examples, batch_size: int, buckets, pad_id: int) -> np.ndarray:
  """:math:`S(x)` of each example under ``model`` (bucketed teacher-forced passes)."""
  out = np.zeros(len(examples), np.float32)
  for batch in bucket_batches(examples, batch_size, buckets, pad_id):
    out[batch["index"]] = jax.device_get(_summed_nll(model, batch["input_ids"], batch["labels"]))
  return out


def _batches(stream: Stream, batch_size, config: UnlearnConfig, pad_id, key: int, idk: bool):
  """The endless batches of a stream (each pass reshuffled), with its IDK sequences if ``idk``."""
  names = ("input_ids", "labels") + (("idk_input_ids", "idk_labels") if idk else ())
  for p in itertools.count():
    rng = np.random.default_rng([config.seed, key, p])
    paired = {"idk_": stream.idk} if idk else None
    for b in bucket_batches(
      stream.examples, batch_size, config.buckets, pad_id, rng, paired=paired
    ):
      batch = {k: b[k] for k in names}
      if stream.ref_nll is not None:
        batch |= {
          "ref_nll": stream.ref_nll[b["index"]],
          "ref_idk_nll": stream.ref_idk_nll[b["index"]],
        }
      yield batch


def unlearn_lm(
  model: nnx.Module,
  forget: Stream,
  retain: Stream,
  config: UnlearnConfig,
  method: str,
  optimizer: str,
  *,
  forget_lr_ratio: float = 1.0,
  pad_id: int,
  checkpoint_dir=None,
  run_key: dict | None = None,
  on_epoch: Callable[[int, nnx.GraphDef, TrainState], None] | None = None,
  progress: bool = True,
  desc: str = "unlearn",
  plan: MeshPlan | None = None,
) -> tuple[nnx.GraphDef, TrainState]:
  """Unlearns ``forget`` from ``model`` (left unchanged, and the frozen reference) with
  ``method`` (``"FORGET+RETAIN"``) and ``optimizer``, for ``config.epochs`` epochs.

  With ``checkpoint_dir`` every epoch is checkpointed and a call resumes there
  (`core.train_epochs`) if its hyper-parameters and ``run_key`` (e.g. the model's fingerprint)
  are the same; ``on_epoch(epoch, graphdef, state)`` runs after each epoch. For a joint run,
  ``forget_lr_ratio`` scales the forget loss's weight instead (one learning rate). With a
  ``plan``, the run is laid out on its device mesh.
  """
  forget_kind, retain_kind = parse_method(method)
  per_epoch = steps_per_epoch(config, len(forget.examples), optimizer)
  total = config.epochs * per_epoch
  tx = unlearn_tx(config, optimizer, forget_lr_ratio, total, per_epoch)
  graphdef, state = init_state(model, tx, config.seed)
  reference = nnx.state(model, nnx.Param) if retain_kind == "KL" else None
  if plan is not None:
    state, reference = plan.put_state(state, tx), plan.put(reference)
  micro = config.batch_size // config.micro_batches
  if forget_kind in ("NPO", "DPO"):  # the reference's NLLs, once
    args = (micro, config.buckets, pad_id)
    forget = dataclasses.replace(
      forget,
      ref_nll=summed_nll(model, forget.examples, *args),
      ref_idk_nll=summed_nll(model, forget.idk, *args),
    )
  f_loss = forget_loss(forget_kind, graphdef, config.beta)
  r_loss = retain_loss(retain_kind, graphdef, config.beta)
  f_coeff = config.forget_coeff * (forget_lr_ratio if optimizer == "joint" else 1.0)

  def as_loss_fn(loss, coeff):
    def loss_fn(params, model_state, batch, rng, extras):
      del rng
      return coeff * loss(params, model_state, batch, extras), (model_state, {})

    return loss_fn

  def joint_loss(params, model_state, batch, rng, extras):
    del rng
    value = f_coeff * f_loss(params, model_state, batch[FORGET], extras)
    value += config.retain_coeff * r_loss(params, model_state, batch[RETAIN], extras)
    return value, (model_state, {})

  joint = optimizer == "joint"
  step = make_step(
    tx,
    joint_loss
    if joint
    else {FORGET: as_loss_fn(f_loss, f_coeff), RETAIN: as_loss_fn(r_loss, config.retain_coeff)},
    plan,
  )
  schedule = alternating(config.forget_steps, config.retain_steps)
  idk = {FORGET: forget_kind in ("DPO", "IDK"), RETAIN: retain_kind == "AP"}

  def epoch_batches(epoch):
    first = epoch * per_epoch
    if joint:
      skip = {FORGET: first * config.micro_batches, RETAIN: first * config.micro_batches}
    else:
      skip = {k: schedule.steps_before(first, k) * config.micro_batches for k in (FORGET, RETAIN)}
    streams = {
      k: itertools.islice(_batches(s, micro, config, pad_id, i, idk[k]), skip[k], None)
      for i, (k, s) in enumerate(((FORGET, forget), (RETAIN, retain)))
    }
    for t in range(first, first + per_epoch):
      for _ in range(config.micro_batches):
        if joint:
          yield None, {k: next(s) for k, s in streams.items()}
        else:
          yield schedule(t), next(streams[schedule(t)])

  state = train_epochs(
    state,
    lambda state, item: step(state, item[1], objective=item[0], extras=reference),
    epoch_batches,
    epochs=config.epochs,
    steps_per_epoch=per_epoch * config.micro_batches,
    hyperparameters={
      **hyperparameters(
        config, method, optimizer, forget_lr_ratio, len(forget.examples), len(retain.examples)
      ),
      **(run_key or {}),
    },
    checkpoint_dir=checkpoint_dir,
    on_epoch=None if on_epoch is None else lambda e, s: on_epoch(e, graphdef, s),
    progress=progress,
    desc=desc,
  )
  return graphdef, state
